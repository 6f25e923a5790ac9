"""Every LoRA function of the kit on SD 1.5's exact architecture (random weights, CPU, 64 px samples).

The expected numbers come from SD 1.5's published shapes and files, not from the model built here:
the parameter counts of its model card, the LoRA parameter count computed from its layer widths,
and the key list of an SD 1.5 attention LoRA file (16 transformer blocks x 8 projections).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from lorakit.adapters import adapter_alphas, adapter_state, add_adapter
from lorakit.control import add_control_adapter, erasure_targets, train_control
from lorakit.data import make_dataset
from lorakit.diffusion import TrainConfig, encode_data
from lorakit.extract import extract_lora
from lorakit.finetune import train
from lorakit.formats import inspect_lora, save_lora
from lorakit.merge import Mixer
from lorakit.sd15 import PUBLISHED_PARAMETERS, attention_lora_parameters, sd15_pipeline

pytestmark = pytest.mark.slow

# SD 1.5's 16 transformer blocks, as diffusers and kohya name them (stable-diffusion-v1-5's UNet)
SD15_TRANSFORMER_BLOCKS = [
    "down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "down_blocks.1.attentions.0", "down_blocks.1.attentions.1",
    "down_blocks.2.attentions.0", "down_blocks.2.attentions.1", "mid_block.attentions.0",
    "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
    "up_blocks.2.attentions.0", "up_blocks.2.attentions.1", "up_blocks.2.attentions.2",
    "up_blocks.3.attentions.0", "up_blocks.3.attentions.1", "up_blocks.3.attentions.2",
]
PROJECTIONS = ["attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
               "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
SD15_MODULES = [f"{b}.transformer_blocks.0.{p}" for b in SD15_TRANSFORMER_BLOCKS for p in PROJECTIONS]  # 128


@pytest.fixture(scope="module")
def sd15():
    """SD 1.5 with a rank-4 attention LoRA (alpha 4) on the UNet, and a plain copy of its middle block."""
    pipe = sd15_pipeline()
    base_mid = copy.deepcopy(pipe.unet.mid_block)
    add_adapter(pipe, rank=4, alpha=4, text_encoder=False)
    return pipe, base_mid


def _data64(n: int = 2):
    """The kit's 32 px shapes at 64 px (8 x 8 latents: SD 1.5's UNet halves them three times)."""
    data = make_dataset(n, seed=0)
    return dataclasses.replace(data, images=F.interpolate(data.images, scale_factor=2, mode="nearest"))


def test_the_architecture_has_sd15s_published_parameter_counts(sd15):
    pipe, _ = sd15
    counts = {part: sum(p.numel() for n, p in getattr(pipe, part).named_parameters() if "lora_" not in n)
              for part in PUBLISHED_PARAMETERS}
    assert counts == PUBLISHED_PARAMETERS


def test_a_rank4_attention_lora_has_the_count_sd15s_shapes_give(sd15):
    pipe, _ = sd15
    trainable = sum(p.numel() for p in pipe.unet.parameters() if p.requires_grad)
    assert trainable == attention_lora_parameters(4) == 797_184
    assert attention_lora_parameters(16) == 4 * 797_184  # linear in the rank


def test_every_lora_function_runs_at_sd15_scale(sd15, tmp_path):
    pipe, base_mid = sd15
    b_before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if "lora_B" in n}
    enc = encode_data(pipe, _data64())
    assert enc.latent_mean.shape == (2, 4, 8, 8) and enc.ids.shape == (2, 77)
    losses = train(pipe, enc, TrainConfig(steps=1, lr=1e-3, batch_size=2), progress=False)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses)).all()
    assert any(not torch.equal(p, b_before[n]) for n, p in pipe.unet.named_parameters() if "lora_B" in n)

    state, alphas = adapter_state(pipe), adapter_alphas(pipe)
    paths = {fmt: save_lora(state, tmp_path / f"{fmt}.safetensors", format=fmt, alpha=alphas)
             for fmt in ("diffusers", "kohya")}
    with safe_open(str(paths["diffusers"]), "pt") as f:
        assert set(f.keys()) == {f"unet.{m}.lora_{ab}.weight" for m in SD15_MODULES for ab in "AB"}
    with safe_open(str(paths["kohya"]), "pt") as f:
        assert set(f.keys()) == {f"lora_unet_{m.replace('.', '_')}.{end}" for m in SD15_MODULES
                                 for end in ("lora_down.weight", "lora_up.weight", "alpha")}
    weights = 4 * 797_184  # float32
    assert weights < paths["diffusers"].stat().st_size < weights + 64 * 1024  # the rest is the header
    for path in paths.values():
        info = inspect_lora(path, pipe)
        assert info.problems == [] and len(info.ranks) == 128 and set(info.ranks.values()) == {4}
        assert set(info.alphas.values()) == {4.0} and info.n_params == 797_184

    tuned_mid = copy.deepcopy(pipe.unet.mid_block)
    with torch.no_grad():  # one step moves some B by less than float32 can resolve against W: give ΔW a size
        for n, p in tuned_mid.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    for layer in tuned_mid.modules():
        if isinstance(layer, LoraLayer):
            layer.merge()
    extracted, energy = extract_lora(base_mid, tuned_mid, rank=4)
    assert len(energy) == 8 and min(energy.values()) > 0.999  # a rank-4 ΔW is kept whole by a rank-4 SVD
    assert extracted[f"{SD15_MODULES[48].removeprefix('mid_block.')}.lora_A.weight"].shape == (4, 1280)
    del tuned_mid

    add_adapter(pipe, rank=4, alpha=4, text_encoder=False, name="other", seed=1)
    with torch.no_grad():
        for n, p in pipe.unet.named_parameters():
            if "lora_B.other" in n:
                p.normal_(0, 1e-3)
    mixer = Mixer(pipe, "default", "other")
    deltas = mixer.deltas("weight", 0.5)
    assert len(deltas) == 128 and deltas["unet." + SD15_MODULES[0]].shape == (320, 320)
    mixer.apply("weight", 0.5)
    mixer.restore()
    pipe.delete_adapters("other")

    add_control_adapter(pipe, rank=4)
    eraser_losses, _ = train_control(pipe, enc, erasure_targets("red", ["small"], ["circle"]), "erasure",
                                     TrainConfig(steps=1, lr=1e-3, batch_size=2), progress=False)
    assert len(eraser_losses) == 1 and torch.isfinite(torch.tensor(eraser_losses)).all()
