"""Self-contained HTML report of one or more run directories."""

from pathlib import Path


def write_report(run_dirs: list[Path], out: Path) -> Path:
    raise NotImplementedError
