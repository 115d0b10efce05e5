"""Upload an export folder to the Hugging Face Hub (``alignkit export --push-to-hub REPO``).

Kept apart from export.py: writing a folder needs no network, pushing does, and the hub
client is one object a test replaces. An adapter export whose base travels in ``base/``
(the packaged dequantised GGUF, the tiny model, a local folder) becomes two repos:
``REPO-base`` with those base weights and ``REPO`` with the adapter, whose
``adapter_config.json`` then names ``REPO-base`` — a hub id, so
``AutoPeftModelForCausalLM.from_pretrained(REPO)`` works from anywhere. The local folder is
left as written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from alignkit.export import BASE_SUBDIR, relink_base

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class HubError(ValueError):
    """A push that cannot start, phrased as one line with the fix."""


class HubClient(Protocol):
    """The two calls of ``huggingface_hub.HfApi`` a push makes."""

    def create_repo(self, repo_id: str, *, private: bool, exist_ok: bool,
                    repo_type: str) -> object: ...

    def upload_folder(self, *, folder_path: str, repo_id: str, repo_type: str,
                      commit_message: str) -> object: ...


@dataclass
class PushResult:
    repo: str
    base_repo: str | None
    uploaded: list[str] = field(default_factory=list)  # files of the main repo


def check_repo_id(repo: str) -> None:
    if not _REPO_ID.match(repo):
        raise HubError(f"--push-to-hub '{repo}': expected a repo id 'owner/name'")


def hub_client() -> HubClient:
    """The real client; refuses early when this process was told to stay offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", "no", ""):
        raise HubError("--push-to-hub needs the Hub: run with HF_HUB_OFFLINE=0 after "
                       "`hf auth login` (alignkit sets HF_HUB_OFFLINE=1 by default)")
    from huggingface_hub import HfApi

    return HfApi()


def push_export(folder: str | Path, repo: str, client: HubClient | None = None,
                private: bool = False) -> PushResult:
    """Upload the export at ``folder`` to model repo ``repo`` (and ``repo-base`` if needed)."""
    folder = Path(folder)
    check_repo_id(repo)
    adapter = (folder / "adapter_config.json").is_file()
    if not (folder / "README.md").is_file() or not (adapter or (folder / "config.json").is_file()):
        raise HubError(f"'{folder}' is not an alignkit export (no README.md with adapter_config"
                       ".json or config.json) — run `alignkit export` first")
    client = client or hub_client()
    base_dir = folder / BASE_SUBDIR
    base_repo = f"{repo}-base" if adapter and base_dir.is_dir() else None
    message = "alignkit export"
    if base_repo is None:
        client.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        client.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                             commit_message=message)
        return PushResult(repo, None, sorted(_files(folder)))
    client.create_repo(base_repo, private=private, exist_ok=True, repo_type="model")
    client.upload_folder(folder_path=str(base_dir), repo_id=base_repo, repo_type="model",
                         commit_message=f"{message}: base weights of {repo}")
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "export"
        shutil.copytree(folder, stage, ignore=shutil.ignore_patterns(BASE_SUBDIR))
        relink_base(stage, base_repo)
        card = stage / "README.md"
        card.write_text(card.read_text() + f"\n## On the Hub\n\nThe base weights are the "
                        f"model repo `{base_repo}`, which `adapter_config.json` names, so "
                        f"`AutoPeftModelForCausalLM.from_pretrained(\"{repo}\")` loads both.\n")
        client.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        client.upload_folder(folder_path=str(stage), repo_id=repo, repo_type="model",
                             commit_message=message)
        return PushResult(repo, base_repo, sorted(_files(stage)))


def _files(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
