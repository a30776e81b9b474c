"""Where things live. Every other module asks here instead of building paths itself."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
DATA_DIR = Path(os.environ.get("FTRAG_DATA_DIR", REPO_ROOT / "data"))
BUILD_DIR = REPO_ROOT / "_build"


def cache_dir() -> Path:
    """Directory for converted checkpoints, indexes, adapters and cached evaluations.

    Outside git (``.cache/`` is ignored). Override with ``FTRAG_CACHE_DIR``.
    """
    path = Path(os.environ.get("FTRAG_CACHE_DIR", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Measured results that the chapters quote (JSON), written by the labs."""
    path = Path(os.environ.get("FTRAG_RESULTS_DIR", BUILD_DIR / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def for_display(path: str | os.PathLike) -> str:
    """``path`` as a lab prints it: relative to the repository (``.cache/indexes/...``) when it lies
    inside it, else only its name, so no one's home directory ends up in a notebook's output."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return path.name
