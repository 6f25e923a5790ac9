"""Saving a pre-trained pipeline: checked before it replaces anything, shipped versions kept, valid JSON."""

import json
import math

import pytest
import torch

from conftest import snapshot
from lorakit import paths
from lorakit.layout import is_sd15_layout
from lorakit.pipeline import load_pipeline
from lorakit.pretrain import PretrainConfig, pretrain, save_pipeline_atomic


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_in_the_report_is_written_as_null(tmp_path):
    out = save_pipeline_atomic(load_pipeline(device="cpu"), tmp_path / "p",
                               report={"final_unet_loss": math.nan, "steps": 3, "nested": [math.inf]})
    report = _strict_json((out / "training_report.json").read_text())
    assert report == {"final_unet_loss": None, "steps": 3, "nested": [None]}
    assert is_sd15_layout(out), "a saved pipeline is laid out as SD 1.5's (both transformers generations load it)"


@pytest.mark.slow
def test_overwriting_a_shipped_pipeline_keeps_the_old_one(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setattr(paths, "DATA_DIR", data)
    monkeypatch.setattr(paths, "REPLACED_DIR", tmp_path / "runs" / "replaced")
    pipe = load_pipeline(device="cpu")
    first = save_pipeline_atomic(pipe, data / "tiny-sd", report={"version": 1})
    before = snapshot(first)
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_pipeline_atomic(pipe, first, report={"version": 2})
    save_pipeline_atomic(pipe, first, overwrite=True, report={"version": 2})
    assert _strict_json((first / "training_report.json").read_text()) == {"version": 2}
    kept = [p for p in (tmp_path / "runs" / "replaced").rglob("tiny-sd") if p.is_dir()]
    assert len(kept) == 1 and snapshot(kept[0]) == before


def test_a_pipeline_that_fails_its_check_replaces_nothing(tmp_path):
    pipe = load_pipeline(device="cpu")
    out = save_pipeline_atomic(pipe, tmp_path / "p")
    before = snapshot(out)
    with torch.no_grad():
        next(pipe.unet.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        save_pipeline_atomic(pipe, out, overwrite=True)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["p"]


@pytest.mark.parametrize("bad", [{"unet_steps": -1}, {"vae_steps": 0}, {"batch_size": 0}, {"n_images": 0},
                                 {"lr": float("nan")}, {"caption_dropout": 1.5}, {"checkpoint_every": -1},
                                 {"ema_decay": 1.0}, {"grad_clip": -1.0}, {"weight_decay": float("inf")}])
def test_impossible_settings_are_refused_before_any_work(bad, tmp_path):
    with pytest.raises(ValueError, match="must be|share"):
        PretrainConfig(**bad)


def test_pretrain_checks_its_folders_before_training(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        pretrain(out=tmp_path / "out", work_dir=tmp_path / "w", config=PretrainConfig(vae_steps=1, unet_steps=1, n_images=8))
    assert not (tmp_path / "w").exists()
