import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from diffusers.utils import convert_state_dict_to_diffusers

from lorakit.evaluation import score_prompts
from lorakit.paths import PIPELINE_DIR
from lorakit.pipeline import (
    DEFAULT_STEPS,
    GENERATE_CHUNK,
    LORA_TARGETS,
    build_pipeline,
    generate,
    generate_groups,
    load_pipeline,
    merged_adapters,
    parameter_counts,
)
from lorakit.pretrain import save_pipeline_atomic
from lorakit.results import RESULTS_DIR

PROMPTS = ["a large red circle", "a small blue square", "a large yellow triangle", "a small green circle"]


def test_the_default_step_count_passes_notebook_01s_rule_in_the_committed_run():
    saved = json.loads((RESULTS_DIR / "01_tiny_stable_diffusion.json").read_text())
    steps = saved["sampler_steps"]
    assert steps["kit_default"] == DEFAULT_STEPS
    assert steps["rows"][str(DEFAULT_STEPS)]["as_accurate"] == "holds"  # within 2 points of 40 steps, 95% CI


def test_shipped_pipeline_is_a_stock_sd_pipeline_and_small(pipe):
    assert type(pipe) is StableDiffusionPipeline
    assert pipe.safety_checker is None
    counts = parameter_counts(pipe)
    assert 1e6 < counts["unet"] < 5e6
    size = sum(f.stat().st_size for f in PIPELINE_DIR.rglob("*") if f.is_file())
    assert size < 10 * 2**20, f"data/tiny-sd is {size / 2**20:.1f} MiB"
    names = {n.rsplit(".", 1)[-1] for n, _ in pipe.unet.named_modules()}
    assert {"to_q", "to_k", "to_v"} <= names


def test_shipped_pipeline_draws_what_it_is_asked(pipe, classifier):
    scored = score_prompts(pipe, PROMPTS, n_per_prompt=3, seed=0, classifier=classifier)
    assert scored.images.shape == (12, 3, 32, 32) and scored.images.dtype == torch.uint8
    acc = scored.accuracy
    assert acc["colour"] >= 0.8 and acc["shape"] >= 0.75 and acc["size"] >= 0.75


def test_generation_is_seeded_per_image(pipe):
    a = generate(pipe, ["a large red circle", "a small blue square"], seed=5, num_inference_steps=5)
    b = generate(pipe, ["a small blue square"], seed=6, num_inference_steps=5)
    assert torch.equal(a[1], b[0]), "image i uses seed + i whatever the batch"


def test_generate_groups_makes_each_groups_images_in_one_batch(pipe):
    groups = [("a large red circle", 5, 2), (["a small blue square", "a large green triangle"], 40, 1)]
    together = generate_groups(pipe, groups, num_inference_steps=5)
    for images, (prompts, seed, n) in zip(together, groups):
        torch.testing.assert_close(images.float(), generate(pipe, prompts, seed, 5, n_per_prompt=n).float(), atol=1, rtol=0)
    with pytest.raises(ValueError, match="no groups"):
        generate_groups(pipe, [])


def test_save_load_round_trip_gives_identical_images(pipe, tmp_path):
    out = save_pipeline_atomic(pipe, tmp_path / "copy")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temp folder left behind"
    again = load_pipeline(out, device="cpu")
    a = generate(pipe, PROMPTS[:2], seed=1, num_inference_steps=8)
    b = generate(again, PROMPTS[:2], seed=1, num_inference_steps=8)
    assert torch.equal(a, b)


def test_missing_or_incomplete_pipeline_says_how_to_rebuild(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m lorakit pretrain"):
        load_pipeline(tmp_path / "absent")
    partial = tmp_path / "partial"
    shutil.copytree(PIPELINE_DIR, partial)
    shutil.rmtree(partial / "unet")
    with pytest.raises(FileNotFoundError, match=r"incomplete \(missing: unet.*python -m lorakit pretrain"):
        load_pipeline(partial)


def test_unknown_words_warn_by_name(pipe):
    with pytest.warns(UserWarning, match=r"never seen: \['dog'\]"):
        generate(pipe, "a red dog", num_inference_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        generate(pipe, "a sks star", num_inference_steps=2)  # held-out and rare words are in the vocabulary


@pytest.mark.slow
def test_lora_attaches_saves_and_loads_through_diffusers(tmp_path):
    pipe = load_pipeline(device="cpu")
    base = generate(pipe, PROMPTS[:2], seed=2, num_inference_steps=6)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(LORA_TARGETS), init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    tuned = generate(pipe, PROMPTS[:2], seed=2, num_inference_steps=6)
    assert not torch.equal(base, tuned)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers)
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()

    fresh = load_pipeline(device="cpu")
    fresh.load_lora_weights(tmp_path, adapter_name="test")
    assert torch.equal(generate(fresh, PROMPTS[:2], seed=2, num_inference_steps=6), tuned)
    fresh.set_adapters(["test"], adapter_weights=[0.0])
    assert torch.equal(generate(fresh, PROMPTS[:2], seed=2, num_inference_steps=6), base)


def _pretrain_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lorakit", "pretrain", "--vae-steps", "2", "--steps", "4", "--n-images", "32",
           "--batch-size", "4", "--checkpoint-every", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_pretrain_cli_end_to_end_and_resume(tmp_path):
    out, work = tmp_path / "tiny", tmp_path / "work"
    done = _pretrain_cli("--out", str(out), "--work-dir", str(work))
    assert done.returncode == 0, done.stderr[-2000:]
    pipe = load_pipeline(out, device="cpu")
    assert generate(pipe, "a red circle", num_inference_steps=2).shape == (1, 3, 32, 32)
    ckpt = torch.load(work / "checkpoint.pt", weights_only=False)
    assert ckpt["stage"] == "unet" and ckpt["step"] == 2
    resumed = _pretrain_cli("--out", str(out), "--work-dir", str(work), "--resume", "--overwrite")
    assert resumed.returncode == 0 and "resumed at stage 'unet', step 2" in resumed.stdout + resumed.stderr
    other = _pretrain_cli("--out", str(out), "--work-dir", str(work), "--resume", "--overwrite", "--lr", "0.1")
    assert other.returncode != 0 and "other settings" in other.stderr


def test_pretrain_without_checkpoint_refuses_to_resume(tmp_path):
    done = _pretrain_cli("--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "none"), "--resume")
    assert done.returncode != 0 and "no checkpoint" in done.stderr


def test_untrained_pipeline_builds_offline():
    pipe = build_pipeline(seed=0)
    assert json.dumps(pipe.unet.config["block_out_channels"]) == "[48, 96]"
    assert pipe.vae.config.latent_channels == 4


# -- bad arguments get the fix, not noise or a traceback ----------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"num_inference_steps": 0}, "num_inference_steps must be"), ({"num_inference_steps": -1}, "pure noise"),
    ({"guidance_scale": float("nan")}, "guidance_scale must be a finite"), ({"n_per_prompt": 0}, "n_per_prompt"),
    ({"prompts": []}, "no prompts"), ({"prompts": [3]}, "prompts must be strings"), ({"seed": -1}, "seed"),
])
def test_generate_refuses_what_would_be_noise_or_a_traceback(pipe, kwargs, match):
    kwargs = {"prompts": "a red circle", **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        generate(pipe, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_says_what_to_do():
    from lorakit.devices import device

    with pytest.raises(ValueError, match="device='cpu'"):
        load_pipeline(device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        device("gpu")


def test_a_corrupted_text_encoder_file_is_named_with_the_rebuild_command(tmp_path):
    broken = tmp_path / "tiny-sd"
    shutil.copytree(PIPELINE_DIR, broken)
    weights = next((broken / "text_encoder").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"text_encoder/.*safetensors could not be loaded.*python -m lorakit pretrain"):
        load_pipeline(broken, device="cpu")


def test_generate_refuses_keywords_the_pipeline_would_ignore(pipe):
    with pytest.raises(TypeError, match=r"\['steps'\].*num_inference_steps"):
        generate(pipe, "a red circle", steps=1)


def _lora_pipe() -> StableDiffusionPipeline:
    """The shipped pipeline with a rank-2 UNet LoRA whose B factors are not zero (a fresh one changes nothing)."""
    pipe = load_pipeline(device="cpu")
    pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=list(LORA_TARGETS)), adapter_name="x")
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
    return pipe


def test_generate_samples_adapters_merged_and_restores_the_exact_weights():
    pipe = _lora_pipe()
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    with merged_adapters(pipe):
        assert all(m.merged for m in pipe.unet.modules() if hasattr(m, "merged_adapters"))
    assert all(torch.equal(before[n], p) for n, p in pipe.unet.named_parameters())
    prompts = ["a large red circle", "a small blue square"] * (GENERATE_CHUNK // 2 + 4)  # two chunks
    merged = generate(pipe, prompts, num_inference_steps=4)
    unmerged = generate(pipe, prompts, num_inference_steps=4, merge=False)
    assert (merged.int() - unmerged.int()).abs().max() <= 1  # the same network, up to float rounding
    assert not torch.equal(merged, generate(load_pipeline(device="cpu"), prompts, num_inference_steps=4))  # it acts
    scaled = generate(pipe, prompts[:4], num_inference_steps=4, cross_attention_kwargs={"scale": 1.0})  # never merged
    assert torch.equal(scaled, generate(pipe, prompts[:4], num_inference_steps=4, merge=False))
    assert all(torch.equal(before[n], p) for n, p in pipe.unet.named_parameters())
    pipe.disable_lora()  # switched off: sampled as the base model, not merged in
    base = load_pipeline(device="cpu")
    assert torch.equal(generate(pipe, prompts[:4], num_inference_steps=4), generate(base, prompts[:4], num_inference_steps=4))


def test_generate_refuses_batch_shaped_pipeline_arguments():
    with pytest.raises(TypeError, match="call the pipeline itself"):
        generate(load_pipeline(device="cpu"), "a large red circle", latents=torch.zeros(1, 4, 8, 8))
