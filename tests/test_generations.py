"""Both library generations: the shipped pipeline and LoRA files behave the same under transformers 4 and 5.

The older generation lives in .venv-compat (`make compat`, pinned by constraints-compat.txt); each
test runs tests/generations_worker.py under both Pythons and compares what they drew. CI builds
.venv-compat before `make test`; elsewhere these tests are skipped until it exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "generations_worker.py"
MAIN, COMPAT = Path(sys.executable), ROOT / ".venv-compat" / "bin" / "python"
CONSTRAINTS = {"main": ROOT / "constraints.txt", "compat": ROOT / "constraints-compat.txt"}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not COMPAT.exists(), reason="the older-generation environment .venv-compat is missing: `make compat` builds it")]


def run(python: Path, *args: object, timeout: int = 600) -> str:
    """Run python with args from the repository root, offline and in quick mode; its output, or a failure that shows it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LORAKIT_QUICK": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run([str(python), *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{python} {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def pinned(name: str) -> dict[str, str]:
    """The versions a constraints file pins with ==."""
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS[name].read_text().splitlines()]
    return dict(line.split("==") for line in lines if "==" in line)


def worker(python: Path, *args: object) -> None:
    run(python, WORKER, *args)


@pytest.mark.parametrize("env,python", [("main", MAIN), ("compat", COMPAT)])
def test_each_environment_runs_the_versions_it_pins(env, python, tmp_path):
    worker(python, "versions", tmp_path / "v.json")
    found = json.loads((tmp_path / "v.json").read_text())
    for package in ("transformers", "diffusers", "peft"):
        assert found[package] == pinned(env)[package], f"{env}: {package} {found[package]}, pinned {pinned(env)[package]}"
    assert found["torch"].split("+")[0] == pinned("main")["torch"]  # one torch for both (the Makefile adds its pin)


def test_the_shipped_pipeline_draws_the_same_images_in_both_generations(tmp_path):
    for name, python in (("main", MAIN), ("compat", COMPAT)):
        worker(python, "images", tmp_path / f"{name}.pt")
    main, compat = (torch.load(tmp_path / f"{n}.pt") for n in ("main", "compat"))
    assert main.shape == compat.shape == (16, 3, 32, 32)
    assert (main.int() - compat.int()).abs().max() <= 1, "more than 1/255 apart"


@pytest.mark.parametrize("writer,reader", [("main", "compat"), ("compat", "main")])
def test_lora_files_cross_between_generations_with_the_same_images(writer, reader, tmp_path):
    python = {"main": MAIN, "compat": COMPAT}
    files = tmp_path / "files"
    files.mkdir()
    worker(python[writer], "write-loras", files)
    assert sorted(p.name for p in files.iterdir()) == ["diffusers.safetensors", "kohya.safetensors"]
    for name in (writer, reader):
        worker(python[name], "lora-images", files, tmp_path / f"{name}.pt")
    here, there = (torch.load(tmp_path / f"{n}.pt") for n in (writer, reader))
    worker(MAIN, "images", tmp_path / "base.pt")
    base = torch.load(tmp_path / "base.pt")
    with safe_open(str(files / "diffusers.safetensors"), "pt") as f:
        assert any(k.startswith("text_encoder.text_model.encoder.layers.") for k in f.keys()), "SD 1.5's key names"
    with safe_open(str(files / "kohya.safetensors"), "pt") as f:
        assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in f.keys())
    assert (here["diffusers"].float() - base.float()).abs().mean() > 2, "the adapter should change the images"
    for fmt in ("diffusers", "kohya"):
        gap = (here[fmt].int() - there[fmt].int()).abs().max().item()
        assert gap <= 1, f"a {fmt} file written under {writer} draws images {gap}/255 apart under {reader}"
    assert (here["diffusers"].int() - here["kohya"].int()).abs().max() <= 1, "the two formats of one adapter differ"


def test_notebook_02_runs_in_the_older_generation():
    out = run(COMPAT, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
              "notebooks/02_lora_from_scratch.ipynb", timeout=900)
    assert " passed" in out and "failed" not in out
