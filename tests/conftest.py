import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _threads():
    # Tests share two cores with nothing else; one thread keeps timings stable. Set before
    # every test: a run that set its configured threads (2) must not leak them into the next
    # test, where a worker pinned to 1 thread would round unlike a trainer left at 2 (seen on
    # a Sapphire Rapids Xeon: the split-vs-local PPO test drifted by 0.6%)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from alignkit.models.loading import TINY, load_tokenizer

    return load_tokenizer(TINY)


PG_URL = os.environ.get("ALIGNKIT_TEST_PG_URL")


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards; skips without one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from alignkit.feedback.store import normalize_url

    if not PG_URL:
        pytest.skip("ALIGNKIT_TEST_PG_URL is not set (source scripts/start_postgres.sh)")
    name = f"alignkit_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(normalize_url(PG_URL)).set(database=name).render_as_string(
            hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
