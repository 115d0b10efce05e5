import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Tests share two cores with nothing else; one thread keeps timings stable.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from alignkit.models.loading import TINY, load_tokenizer

    return load_tokenizer(TINY)
