"""Small JSON result files the notebooks write, from which notebook 08 builds the claims table.

Full-mode runs write notebooks/results/<notebook>.json (committed with the notebooks' outputs);
quick-mode runs write under runs/quick-results/ so CI never overwrites the lesson's numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.config import CFG
from lorakit.paths import REPO_ROOT, RUNS_DIR, atomic_path

RESULTS_DIR = REPO_ROOT / "notebooks" / "results"


def results_path(notebook: str, quick: bool | None = None) -> Path:
    """Where a notebook's results live in this mode (or the given one)."""
    quick = CFG.quick if quick is None else quick
    return (RUNS_DIR / "quick-results" if quick else RESULTS_DIR) / f"{notebook}.json"


def save_results(notebook: str, results: dict) -> Path:
    """Write a notebook's results (JSON-serialisable numbers and strings) atomically; returns the path."""
    path = results_path(notebook)
    text = json.dumps({"mode": CFG.mode, **results}, indent=2, sort_keys=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path
