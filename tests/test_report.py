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
