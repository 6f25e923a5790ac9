"""`python -m lorakit`: safe defaults, usage errors for impossible numbers, and nothing lost to a typo."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import snapshot
from lorakit import paths
from lorakit.__main__ import build_parser, main
from lorakit.paths import CLASSIFIER_PATH, DATA_DIR, PIPELINE_DIR, RUNS_DIR


def _fails(argv, capsys) -> str:
    """Run the command line in-process; it must stop with exit code 2 and say why on stderr."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_defaults_write_under_runs_never_into_data():
    parser = build_parser()
    for command in ("pretrain", "train-classifier", "train-adapters"):
        args = parser.parse_args([command])
        assert args.out.is_relative_to(RUNS_DIR) and not args.out.is_relative_to(DATA_DIR), command
        assert args.overwrite is False
    assert parser.parse_args(["pretrain"]).work_dir == RUNS_DIR / "pretrain"


def test_relative_paths_start_at_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # e.g. a learner's terminal in notebooks/
    args = build_parser().parse_args(["pretrain", "--out", "runs/mine", "--work-dir", "runs/w"])
    assert args.out == paths.REPO_ROOT / "runs" / "mine" and args.work_dir == paths.REPO_ROOT / "runs" / "w"


@pytest.mark.parametrize("argv", [
    ["pretrain", "--steps", "-1"], ["pretrain", "--steps", "0"], ["pretrain", "--vae-steps", "0"],
    ["pretrain", "--batch-size", "0"], ["pretrain", "--n-images", "-5"], ["pretrain", "--lr", "nan"],
    ["pretrain", "--lr", "-1e-3"], ["train-classifier", "--steps", "0"], ["train-adapters", "--steps", "-2"],
    ["pretrain", "--steps", "ten"],
])
def test_impossible_numbers_are_usage_errors(argv, capsys):
    err = _fails(argv, capsys)
    assert "must be" in err or "expected" in err


def test_pretrain_into_a_folder_with_other_files_is_refused_and_nothing_changes(tmp_path, capsys):
    data = tmp_path / "data"  # laid out like the repository's data/: the typo --out data
    shutil.copytree(DATA_DIR, data)
    before = snapshot(data)
    for extra in ([], ["--overwrite"]):
        err = _fails(["pretrain", "--out", str(data), "--work-dir", str(tmp_path / "w"), *extra], capsys)
        assert "already holds other files" in err and "classifier.safetensors" in err
    assert snapshot(data) == before and not (tmp_path / "w").exists()


def test_replacing_a_pipeline_folder_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "tiny-sd"
    shutil.copytree(PIPELINE_DIR, out)
    before = snapshot(out)
    err = _fails(["pretrain", "--out", str(out), "--work-dir", str(tmp_path / "w")], capsys)
    assert "already holds a pipeline folder" in err and "--overwrite" in err
    assert snapshot(out) == before


def test_a_work_folder_with_a_checkpoint_needs_resume_or_overwrite(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"an earlier run")
    err = _fails(["pretrain", "--out", str(tmp_path / "o"), "--work-dir", str(work)], capsys)
    assert "--resume" in err and (work / "checkpoint.pt").read_bytes() == b"an earlier run"


def test_classifier_and_adapters_refuse_to_replace_without_overwrite(tmp_path, capsys):
    existing = tmp_path / "classifier.safetensors"
    shutil.copy(CLASSIFIER_PATH, existing)
    err = _fails(["train-classifier", "--out", str(existing), "--steps", "3"], capsys)
    assert "already exists" in err and existing.read_bytes() == CLASSIFIER_PATH.read_bytes()
    adapters = tmp_path / "adapters"
    shutil.copytree(DATA_DIR / "adapters", adapters)
    before = snapshot(adapters)
    err = _fails(["train-adapters", "--out", str(adapters), "--steps", "1"], capsys)
    assert "already holds a folder of concept adapters" in err
    assert snapshot(adapters) == before


def test_errors_exit_non_zero_from_a_shell(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    done = subprocess.run([sys.executable, "-m", "lorakit", "pretrain", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "mine.txt" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_train_classifier_writes_a_new_file(tmp_path, capsys, monkeypatch):
    from functools import partial

    import lorakit.classifier as classifier

    # the command end to end at toy size, the object network on few images too (what the shipped one learnt is
    # checked in test_classifier)
    monkeypatch.setattr(classifier, "train_object_judge", partial(classifier.train_object_judge, n=64, held=64))
    out = tmp_path / "clf.safetensors"
    main(["train-classifier", "--out", str(out), "--steps", "2", "--n-train", "512", "--object-steps", "2"])
    assert out.is_file() and "held-out accuracy" in capsys.readouterr().out


def test_overwrite_replaces_only_a_classifier_file_never_another_file(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("the learner's notes")
    err = _fails(["train-classifier", "--out", str(notes), "--overwrite", "--steps", "1"], capsys)
    assert "is not a classifier file" in err and notes.read_text() == "the learner's notes"


def test_out_and_work_dir_must_be_separate_before_any_training(tmp_path, capsys):
    for out, work in ((tmp_path / "same", tmp_path / "same"), (tmp_path / "w" / "out", tmp_path / "w")):
        err = _fails(["pretrain", "--out", str(out), "--work-dir", str(work)], capsys)
        assert "separate folders" in err


def test_resuming_from_an_unreadable_checkpoint_says_how_to_start_afresh(tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    err = _fails(["pretrain", "--out", str(tmp_path / "o"), "--work-dir", str(work), "--resume"], capsys)
    assert "unreadable" in err and "--overwrite" in err
