"""The exercises: every reference passes its check (every chapter's, listed in CASES; each chapter's typical
mistakes are tested in tests/test_exercises_<module>.py), every stub and typical mistake gets a hint (never a
traceback), a failed check hands the reference to the cells below, and the editions are built right."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lorakit import check
from lorakit.editions import STUB, exercise_names, student_notebook, write_student_edition
from lorakit.exercises import collapse, control, diffusion, files, finetuning, lora, mixing, scale

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _stub(*args, **kwargs):
    raise NotImplementedError()


class _StubLayer(nn.Module):
    def __init__(self, base, rank, alpha):
        raise NotImplementedError()


CASES = [  # (check, reference, stub)
    (diffusion.check_guide, diffusion.reference_guide, _stub),
    (diffusion.check_add_noise, diffusion.reference_add_noise, _stub),
    (diffusion.check_noise_loss, diffusion.reference_noise_loss, _stub),
    (lora.check_lora_layer, lora.LoRALinear, _StubLayer),
    (lora.check_merge, lora.reference_merge, _stub),
    (lora.check_add_lora, lora.reference_add_lora, _stub),
    (finetuning.check_lora_counts, finetuning.reference_lora_counts, _stub),
    (finetuning.check_effective_rank, finetuning.reference_effective_rank, _stub),
    (finetuning.check_low_rank, finetuning.reference_low_rank, _stub),
    (collapse.check_vendi, collapse.reference_vendi, _stub),
    (collapse.check_choose_checkpoint, collapse.reference_choose_checkpoint, _stub),
    (collapse.check_prior_preservation_loss, collapse.reference_prior_preservation_loss, _stub),
    (mixing.check_weight_mix, mixing.reference_weight_mix, _stub),
    (mixing.check_factor_mix, mixing.reference_factor_mix, _stub),
    (mixing.check_adapter_weight, mixing.reference_adapter_weight, _stub),
    (files.check_lora_size, files.reference_lora_size, _stub),
    (files.check_file_scales, files.reference_file_scales, _stub),
    (files.check_to_kohya, files.reference_to_kohya, _stub),
    (scale.check_attention_lora_parameters, scale.reference_attention_lora_parameters, _stub),
    (control.check_slider_prompts, control.reference_slider_prompts, _stub),
    (control.check_slider_target, control.reference_slider_target, _stub),
    (control.check_esd_target, control.reference_esd_target, _stub),
]


@pytest.mark.parametrize("check_fn, reference, stub", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_reference_passes_and_stub_is_reported_as_not_done(check_fn, reference, stub, capsys):
    assert check_fn(reference) and "[OK]" in capsys.readouterr().out
    assert not check_fn(stub)
    out = capsys.readouterr().out
    assert "[HINT]" in out and "not written yet" in out and "Traceback" not in out


@pytest.mark.parametrize("check_fn, reference, stub", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_failed_exercise_hands_the_reference_to_the_cells_below(check_fn, reference, stub, capsys):
    name = f"test {check_fn.__name__}"
    assert check.exercise(name, stub, check_fn, reference) is reference
    assert check.exercise_summary()[name] == check.NOT_WRITTEN and not check.passed(name)
    assert check.exercise(name, reference, check_fn, reference) is reference and check.passed(name)
    capsys.readouterr()
    assert check.exercise_summary()[name] == check.DONE and "[x] " + name in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (lambda u, c, g: c + g * (u - c), "wrong way"),
    (lambda u, c, g: g * (c - u), "only the difference"),
    (lambda u, c, g: g * c, "*difference*"),
])
def test_guidance_mistakes_are_named(answer, hint, capsys):
    assert not diffusion.check_guide(answer)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (lambda x0, n, a: a.view(-1, 1, 1, 1) * x0 + (1 - a.view(-1, 1, 1, 1)) * n, "square roots"),
    (lambda x0, n, a: (1 - a.view(-1, 1, 1, 1)).sqrt() * x0 + a.view(-1, 1, 1, 1).sqrt() * n, "swapped"),
    (lambda x0, n, a: a.sqrt() * x0 + (1 - a).sqrt() * n, "raised RuntimeError"),  # (B,) against (B, C, H, W)
])
def test_noising_mistakes_are_named(answer, hint, capsys):
    assert not diffusion.check_add_noise(answer)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (lambda unet, x, t, c, n: F.mse_loss(unet(x, t, encoder_hidden_states=c).sample, x), "not the noisy latent"),
    (lambda unet, x, t, c, n: F.mse_loss(unet(x, t, encoder_hidden_states=c).sample, n, reduction="sum"), "summed"),
    (lambda unet, x, t, c, n: F.mse_loss(unet(x, t, encoder_hidden_states=c).sample.detach(), n), "does not depend"),
    (lambda unet, x, t, c, n: F.mse_loss(unet(x, t, encoder_hidden_states=c), n), "AttributeError"),
])
def test_loss_mistakes_are_named(answer, hint, capsys):
    assert not diffusion.check_noise_loss(answer)
    assert hint in capsys.readouterr().out


def _add_lora_unfrozen(model, targets, layer_cls, rank, alpha):
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    for n in names:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, layer_cls(getattr(model.get_submodule(parent), child), rank, alpha))
    return names


def _add_lora_everywhere(model, targets, layer_cls, rank, alpha):
    model.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for n in names:
        parent, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent), child, layer_cls(getattr(model.get_submodule(parent), child), rank, alpha))
    return names


@pytest.mark.parametrize("answer, hint", [
    (_add_lora_unfrozen, "still trainable"), (_add_lora_everywhere, "ends with '.' + target"),
    (lambda model, targets, layer_cls, rank, alpha: [], "no layer was replaced"),
])
def test_add_lora_mistakes_are_named(answer, hint, capsys):
    assert not lora.check_add_lora(answer)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("answer, hint", [
    (lambda c, s: (f"a {c} {s}", f"a small {c} {s}", f"a large {c} {s}"), "swapped"),
    (lambda c, s: (f"a large {c} {s}", f"a large {c} {s}", f"a small {c} {s}"), "without a size word"),
    (lambda c, s: (f"a {c} {s}", f"a {c} {s} large", f"a {c} {s} small"), "differ in that one word"),
])
def test_slider_prompt_mistakes_are_named(answer, hint, capsys):
    assert not control.check_slider_prompts(answer)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("check_fn, answer, hint", [
    (control.check_slider_target, lambda c, p, m, s, eta=1.0: c + s * eta * (m - p), "reversed"),
    (control.check_slider_target, lambda c, p, m, s, eta=1.0: c + eta * (p - m), "both the scale"),
    (control.check_slider_target, lambda c, p, m, s, eta=1.0: s * eta * (p - m), "start from the frozen"),
    (control.check_esd_target, lambda c, a, eta=1.0: a + eta * (c - a), "*towards* the concept"),
    (control.check_esd_target, lambda c, a, eta=1.0: c - eta * (c - a), "anchor's prediction"),
    (control.check_esd_target, lambda c, a, eta=1.0: a - (c - a), "scale the push by"),
])
def test_control_target_mistakes_are_named(check_fn, answer, hint, capsys):
    assert not check_fn(answer)
    assert hint in capsys.readouterr().out


# -- the editions ---------------------------------------------------------------------------------

def _answer_cell(source, gid="ex-a"):
    return {"cell_type": "code", "id": gid, "execution_count": 3, "outputs": [{"output_type": "stream", "text": "x"}],
            "metadata": {"nbgrader": {"solution": True, "grade": False, "grade_id": gid, "locked": False,
                                      "schema_version": 3, "task": False}}, "source": source}


def test_student_notebook_stubs_solutions_drops_hidden_tests_and_clears_outputs():
    nb = {"metadata": {"widgets": {}}, "cells": [
        _answer_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"),
        {"cell_type": "code", "id": "c", "execution_count": 4, "outputs": [], "metadata": {},
         "source": "f = exercise('a', f, c, r)\n### BEGIN HIDDEN TESTS\nassert passed('a')\n### END HIDDEN TESTS"}]}
    out = student_notebook(nb)
    assert "".join(out["cells"][0]["source"]) == "def f(x):\n" + "\n".join("    " + l for l in STUB.splitlines())
    assert "".join(out["cells"][1]["source"]) == "f = exercise('a', f, c, r)"
    assert out["cells"][0]["outputs"] == [] and out["cells"][0]["execution_count"] is None
    assert "widgets" not in out["metadata"] and "return 2 * x" in "".join(nb["cells"][0]["source"])  # input untouched
    assert exercise_names(nb) == ["ex-a"]


def test_a_solution_without_nbgrader_metadata_is_refused():
    cell = _answer_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")
    cell["metadata"] = {}
    with pytest.raises(ValueError, match="nbgrader solution metadata"):
        student_notebook({"metadata": {}, "cells": [cell]})


def test_write_student_edition_keeps_a_learners_notebook_unless_told(tmp_path, monkeypatch):
    import lorakit.editions as editions

    monkeypatch.setattr(editions, "REPLACED_DIR", tmp_path / "replaced")
    source = NOTEBOOKS / "01_tiny_stable_diffusion.ipynb"
    out = tmp_path / "student"
    assert write_student_edition([source], out) == {out / source.name: "written"}
    (out / source.name).write_text("my work")
    assert write_student_edition([source], out) == {out / source.name: "kept"}
    assert (out / source.name).read_text() == "my work"
    assert write_student_edition([source], out, overwrite=True) == {out / source.name: "written"}
    assert [p.read_text() for p in (tmp_path / "replaced").rglob(source.name)] == ["my work"]
    with pytest.raises(FileNotFoundError):
        write_student_edition([tmp_path / "missing.ipynb"], out)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS.glob("[0-9]*.ipynb")), ids=lambda p: p.stem)
def test_every_answer_cell_has_its_check_cell_right_after_it(notebook):
    nb = json.loads(notebook.read_text())
    ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    for i, cell in enumerate(nb["cells"]):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution"):
            gid = meta["grade_id"]
            checks = [j for j, g in enumerate(ids) if g == gid + "-check"]
            assert checks and checks[0] > i, f"{notebook.name}: {gid} has no check cell after it"
            test_cell = nb["cells"][checks[0]]
            assert test_cell["metadata"]["nbgrader"]["grade"] and test_cell["metadata"]["nbgrader"]["locked"]
            assert "### BEGIN HIDDEN TESTS" in "".join(test_cell["source"])
    named = [g for g in ids if g]
    assert len(named) == len(set(named)), f"{notebook.name}: grade ids repeat"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [p for p in sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))
                                      if exercise_names(json.loads(p.read_text()))], ids=lambda p: p.stem)
def test_an_untouched_student_notebook_runs_to_the_end_and_says_what_is_left(notebook, tmp_path, monkeypatch):
    """Run All on the student edition (quick mode): no cell fails, and the summary lists every exercise as not done."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LORAKIT_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = json.loads(notebook.read_text())
    nb = nbformat.reads(json.dumps(student_notebook(source)), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    summary = "".join(o.get("text", "") for o in nb.cells[next(i for i, c in enumerate(nb.cells) if c.get("id") == "exercise-summary")].outputs)
    n = len(exercise_names(source))
    assert f"0 of {n} exercises done" in summary and summary.count("not done yet") == n, summary


@pytest.mark.slow
def test_the_nbgrader_route_releases_our_student_edition_and_autogrades_with_the_kits_checks(tmp_path):
    """nbgrader's own generate_assignment gives the same stubs as `make student`, and autograde scores the
    instructor notebook (solutions in) full marks and the untouched student edition zero, running it to the end."""
    pytest.importorskip("nbgrader")
    import subprocess
    import sys

    notebook = NOTEBOOKS / "07_lora_as_a_control.ipynb"  # the quickest notebook with exercises
    source = json.loads(notebook.read_text())
    (tmp_path / "source" / "ps1").mkdir(parents=True)
    (tmp_path / "source" / "ps1" / notebook.name).write_text(json.dumps(student_notebook(source) | {"cells": [
        c | {"outputs": [], "execution_count": None} if c["cell_type"] == "code" else c for c in source["cells"]]}))
    (tmp_path / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(tmp_path)!r}\nc.CourseDirectory.course_id = 'lorakit'\n"
        "c.ExecutePreprocessor.timeout = 600\n")
    for who, cells in [("instructor", source["cells"]), ("learner", student_notebook(source)["cells"])]:
        (tmp_path / "submitted" / who / "ps1").mkdir(parents=True)
        (tmp_path / "submitted" / who / "ps1" / notebook.name).write_text(json.dumps(source | {"cells": cells}))
    import os

    env = {**os.environ, "LORAKIT_QUICK": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}  # nbgrader runs `alembic`

    def nbgrader(*args):
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    nbgrader("db", "student", "add", "instructor")
    nbgrader("db", "student", "add", "learner")
    nbgrader("generate_assignment", "ps1", "--force")
    released = json.loads((tmp_path / "release" / "ps1" / notebook.name).read_text())
    ours = student_notebook(source)
    answers = [c for c in released["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    assert ["".join(c["source"]).strip() for c in answers] == [
        "".join(c["source"]).strip() for c in ours["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("solution")]
    nbgrader("autograde", "ps1", "--force")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        scores = {who: gradebook.find_submission("ps1", who).score for who in ("instructor", "learner")}
        max_score = gradebook.find_assignment("ps1").max_score
    assert max_score == len(exercise_names(source)) and scores == {"instructor": max_score, "learner": 0}


def test_the_student_command_writes_the_edition_and_keeps_what_is_there(tmp_path, capsys):
    from lorakit.__main__ import main

    main(["student", "--out", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.glob("*.ipynb"))
    assert written == sorted(p.name for p in NOTEBOOKS.glob("[0-9]*.ipynb"))
    assert "raise NotImplementedError()" in (tmp_path / "02_lora_from_scratch.ipynb").read_text()
    main(["student", "--out", str(tmp_path)])
    assert "kept" in capsys.readouterr().out
