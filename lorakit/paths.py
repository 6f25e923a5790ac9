"""Where the kit's shipped files live (data/ at the repository root)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CLASSIFIER_PATH = DATA_DIR / "classifier.safetensors"
PIPELINE_DIR = DATA_DIR / "tiny-sd"
