"""Where the kit's shipped files live (data/ at the repository root)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CLASSIFIER_PATH = DATA_DIR / "classifier.safetensors"
PIPELINE_DIR = DATA_DIR / "tiny-sd"
RUNS_DIR = REPO_ROOT / "runs"  # what notebooks write while they run (checkpoints); not committed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file next to `path` to write; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
