"""Chapters 02-07 on another base model (LORAKIT_BASE): the kit's 32 px data and judge meet a larger model.

The stand-in for SD 1.5 here is the tiny model drawing at 64 px (its configs' sample sizes doubled):
the same code paths as a 512 px model, at a size a CPU runs in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lorakit import paths
from lorakit.__main__ import build_parser
from lorakit.classifier import classify, load_classifier
from lorakit.concepts import adapter_path
from lorakit.data import IMAGE_SIZE, at_kit_size, make_dataset, resize_images
from lorakit.diffusion import encode_data
from lorakit.metrics import image_vendi, nearest_train_distance, object_area
from lorakit.pipeline import generate, image_size, load_pipeline
from lorakit.pixels import pixel_words
from lorakit.results import RESULTS_DIR, results_path


@pytest.fixture(scope="module")
def base64_dir(tmp_path_factory):
    """A pipeline folder laid out like SD 1.5's: the tiny model, drawing 64 px images (16 x 16 latents)."""
    folder = tmp_path_factory.mktemp("bases") / "tiny-64px"
    shutil.copytree(paths.PIPELINE_DIR, folder)
    for part, size in (("unet", 16), ("vae", 64)):
        config = folder / part / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "sample_size": size}, indent=2))
    return folder


@pytest.fixture()
def on_base(monkeypatch, base64_dir):
    monkeypatch.setenv("LORAKIT_BASE", str(base64_dir))
    return base64_dir


def test_without_the_setting_every_chapter_loads_the_tiny_model(monkeypatch):
    monkeypatch.delenv("LORAKIT_BASE", raising=False)
    assert paths.base_pipeline_dir() == paths.PIPELINE_DIR
    assert paths.concept_adapters_dir() == paths.ADAPTERS_DIR
    assert image_size(load_pipeline()) == IMAGE_SIZE


def test_the_setting_moves_the_chapters_to_its_model_and_its_own_adapters(on_base):
    assert paths.base_pipeline_dir() == on_base
    assert image_size(load_pipeline()) == 64
    assert paths.concept_adapters_dir() == paths.RUNS_DIR / "adapters-tiny-64px"  # never data/: nothing shipped changes


def test_a_setting_that_names_no_pipeline_is_refused_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAKIT_BASE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a pipeline folder"):
        load_pipeline()


def test_notebook_05_says_how_to_train_the_concept_adapters_a_new_base_needs(on_base):
    with pytest.raises(FileNotFoundError, match=r"train-adapters.*adapters-tiny-64px"):
        adapter_path("orange")
    assert build_parser().parse_args(["train-adapters"]).out == paths.RUNS_DIR / "adapters-tiny-64px"  # where 05 looks


def test_resizing_keeps_the_kit_shapes_crisp_up_and_averages_down():
    small = make_dataset(4, seed=0).images  # (4, 3, 32, 32)
    big = resize_images(small, 128)
    assert big.shape == (4, 3, 128, 128) and big.dtype == torch.uint8
    assert torch.equal(big[:, :, ::4, ::4], small)  # nearest neighbour: every pixel a 4 x 4 block
    assert torch.equal(at_kit_size(big), small)  # area averaging of equal blocks gives them back exactly
    assert torch.equal(resize_images(small, IMAGE_SIZE), small)
    with pytest.raises(ValueError, match="square"):
        resize_images(small[:, :, :, :16], 64)
    with pytest.raises(ValueError):
        resize_images(small, 0)


def test_the_judge_and_the_pixel_metrics_read_a_larger_image_as_its_32_px_version():
    small = make_dataset(16, seed=1).images
    big = resize_images(small, 64)
    clf = load_classifier()
    for key, value in classify(clf, small).items():
        assert torch.allclose(classify(clf, big)[key], value, atol=1e-5), key
    assert pixel_words(big) == pixel_words(small)
    assert image_vendi(big) == pytest.approx(image_vendi(small))
    assert torch.equal(object_area(big), object_area(small))
    assert torch.allclose(nearest_train_distance(big, small), torch.zeros(16), atol=1e-6)


def test_training_data_is_drawn_at_the_models_size_and_images_come_back_at_it(on_base):
    pipe = load_pipeline()
    enc = encode_data(pipe, make_dataset(3, seed=2))
    assert enc.latent_mean.shape == (3, 4, 16, 16)  # 64 px through the 4x VAE
    images = generate(pipe, ["a large red circle", "a small blue square"], n_per_prompt=2)
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8


def test_a_larger_model_gets_fewer_images_per_pipeline_call(on_base, monkeypatch):
    from lorakit import pipeline as module

    pipe = load_pipeline()
    calls = []
    real_call = type(pipe).__call__

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["prompt"]))
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(module, "GENERATE_CHUNK", 8)
    monkeypatch.setattr(type(pipe), "__call__", counting)
    generate(pipe, "a red circle", n_per_prompt=5, num_inference_steps=2)
    assert calls == [2, 2, 1]  # 8 images of 32 px hold the pixels of 2 of 64 px


@pytest.mark.slow
def test_notebook_02_runs_unchanged_on_another_base_in_quick_mode(base64_dir, tmp_path):
    env = {**os.environ, "LORAKIT_BASE": str(base64_dir), "LORAKIT_RUNS": str(tmp_path / "runs"), "LORAKIT_QUICK": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          str(paths.REPO_ROOT / "notebooks" / "02_lora_from_scratch.ipynb")],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_a_run_on_another_base_never_writes_over_the_committed_results(on_base):
    assert results_path("04_mode_collapse", quick=False) == paths.RUNS_DIR / "results-tiny-64px" / "04_mode_collapse.json"
    assert not results_path("04_mode_collapse", quick=False).is_relative_to(RESULTS_DIR)


def test_a_base_with_another_sampler_samples_with_dpm_solver_as_the_step_count_was_measured(base64_dir, tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    folder = tmp_path / "pndm-base"
    shutil.copytree(base64_dir, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "PNDMScheduler"}))
    assert isinstance(load_pipeline(folder).scheduler, DPMSolverMultistepScheduler)
