"""Small JSON result files the notebooks write, from which notebook 08 builds the claims table.

Full-mode runs write notebooks/results/<notebook>.json (committed with the notebooks' outputs);
quick-mode runs write under runs/quick-results/ so CI never overwrites the lesson's numbers, and runs on another
base model (LORAKIT_BASE) under runs/results-<its folder name>/: the committed numbers are the tiny model's.
"""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.config import CFG
from lorakit.paths import REPO_ROOT, RUNS_DIR, atomic_path, base_checkpoint_dir, json_text

RESULTS_DIR = REPO_ROOT / "notebooks" / "results"


def notebook_number(notebook: str) -> str:
    """A notebook's number as its title writes it: "04" for 04_mode_collapse, "04b" for 04b_collapse_remedies."""
    return notebook.split("_", 1)[0]


def results_path(notebook: str, quick: bool | None = None) -> Path:
    """Where a notebook's results live in this mode (or the given one)."""
    quick = CFG.quick if quick is None else quick
    base = base_checkpoint_dir()
    folder = RUNS_DIR / "quick-results" if quick else RESULTS_DIR if base is None else RUNS_DIR / f"results-{base.name}"
    return folder / f"{notebook}.json"


def save_results(notebook: str, results: dict) -> Path:
    """Write a notebook's results (JSON-serialisable numbers and strings; NaN saved as null) atomically."""
    path = results_path(notebook)
    with atomic_path(path) as tmp:
        tmp.write_text(json_text({"mode": CFG.mode, **results}, sort_keys=True))
    return path


def load_results(notebook: str, quick: bool | None = None) -> dict:
    """A notebook's saved results in this mode (or the given one); {} when it has saved none yet."""
    path = results_path(notebook, quick)
    return json.loads(path.read_text()) if path.is_file() else {}


def update_results(notebook: str, **values: object) -> Path:
    """Add or replace some keys of a notebook's saved results (e.g. its run time at the end), atomically."""
    return save_results(notebook, {k: v for k, v in {**load_results(notebook), **values}.items() if k != "mode"})
