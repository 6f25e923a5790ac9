"""Saved results: strict JSON (NaN as null), written atomically, and updated key by key."""

import json

import pytest

from lorakit import results
from lorakit.config import RunConfig


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path / "results")
    return tmp_path


@pytest.mark.parametrize("quick", [True, False])
def test_save_update_and_load(folders, monkeypatch, quick):
    monkeypatch.setattr(results, "CFG", RunConfig(quick=quick))
    path = results.save_results("09_x", {"a": 1.5, "b": float("nan"), "nested": {"c": [float("inf"), 2]}})
    assert path.parent == (folders / "runs" / "quick-results" if quick else folders / "results")
    saved = json.loads(path.read_text())  # strict JSON: NaN and inf are written as null
    assert saved == {"mode": "quick" if quick else "full", "a": 1.5, "b": None, "nested": {"c": [None, 2]}}
    results.update_results("09_x", seconds=12.5)
    assert results.load_results("09_x") == {**saved, "seconds": 12.5}
    assert results.load_results("never_saved") == {}
