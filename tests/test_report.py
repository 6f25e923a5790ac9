"""The README's result tables are generated from the saved results, and the committed README agrees with them."""

import pytest

from lorakit.report import README, generated_blocks, render, update_readme


def test_committed_readme_agrees_with_the_saved_results():
    assert update_readme(check=True) == [], "README.md is out of date: run `make readme` (python -m lorakit readme)"


def test_render_replaces_only_the_marked_block():
    text = "intro 42\n<!-- generated:t -->\nold 1\n<!-- /generated:t -->\noutro 7\n"
    assert render(text, {"t": "new 2"}) == "intro 42\n<!-- generated:t -->\nnew 2\n<!-- /generated:t -->\noutro 7\n"
    with pytest.raises(ValueError, match="no markers for block 'x'"):
        render(text, {"x": "y"})


def test_a_changed_result_makes_the_readme_stale(tmp_path):
    import json
    import shutil

    from lorakit.results import RESULTS_DIR

    for p in RESULTS_DIR.glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    assert update_readme(readme, check=True, results_dir=tmp_path) == []
    saved = json.loads((tmp_path / "01_tiny_stable_diffusion.json").read_text())
    saved["base_quality"]["overall"]["colour"] = 0.5
    (tmp_path / "01_tiny_stable_diffusion.json").write_text(json.dumps(saved))
    assert update_readme(readme, check=True, results_dir=tmp_path) == ["base-quality"]
    update_readme(readme, results_dir=tmp_path)
    assert "| colour | 0.50 |" in readme.read_text() and update_readme(readme, check=True, results_dir=tmp_path) == []


def test_every_block_is_generated():
    assert set(generated_blocks()) == {"notebook-times", "claims", "base-quality", "judge-audit", "pretraining", "lora-vs-full",
                                       "collapse", "mixing", "files", "erasers"}


def test_committed_notebooks_carry_their_runtimes_exercises_and_takeaways():
    from lorakit.report import update_notebooks

    assert update_notebooks(check=True) == [], "a notebook's at-a-glance or takeaway block is stale: run `make readme`"


def test_at_a_glance_reads_times_exercises_and_questions_and_notebooks_are_rewritten_atomically(tmp_path):
    import json

    from lorakit.report import at_a_glance, record_quick_times, update_notebooks

    results, quick_runs, quick = tmp_path / "results", tmp_path / "quick-results", tmp_path / "quick"
    results.mkdir()
    quick_runs.mkdir()
    (results / "09_x.json").write_text(json.dumps({"seconds": 125.4, "verdicts": []}))
    (quick_runs / "09_x.json").write_text(json.dumps({"seconds": 7.2, "mode": "quick"}))
    assert record_quick_times(quick_runs, quick) == ["09_x"] and json.loads((quick / "09_x.json").read_text()) == {"seconds": 7.2}

    def cell(kind, text):
        return {"cell_type": kind, "metadata": {}, "source": text, **({"outputs": []} if kind == "code" else {})}

    nb = {"cells": [cell("markdown", "# 09\n<!-- generated:at-a-glance -->\n<!-- /generated:at-a-glance -->"),
                    cell("code", 'f = exercise("09.1 a thing", f, check_f, ref_f)'),
                    cell("code", 'ask("09.a")'),
                    cell("markdown", "## Takeaway\n<!-- generated:takeaway -->\n<!-- /generated:takeaway -->")],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    glance = at_a_glance(nb, "09_x", results, quick)
    assert "2 min 5 s in full mode, 7 s in quick mode" in glance
    assert "**Exercises** (1," in glance and "09.1 a thing" in glance and "1 question along" in glance
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    (notebooks / "09_x.ipynb").write_text(json.dumps(nb))
    assert update_notebooks(notebooks, check=True, results_dir=results, quick_dir=quick) == ["09_x"]
    assert update_notebooks(notebooks, results_dir=results, quick_dir=quick) == ["09_x"]
    written = json.loads((notebooks / "09_x.ipynb").read_text())
    assert "7 s in quick mode" in "".join(written["cells"][0]["source"])
    assert "Nothing measured here" in "".join(written["cells"][3]["source"])
    assert update_notebooks(notebooks, check=True, results_dir=results, quick_dir=quick) == []
    with pytest.raises(FileNotFoundError, match="quick mode first"):
        record_quick_times(tmp_path / "empty")
