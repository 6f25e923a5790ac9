"""What a LoRA costs on the tiny model and on SD 1.5's architecture (random weights), side by side on this machine.

Run: .venv/bin/python benchmarks/sd15_cost.py   (about 2 minutes on a 2-core CPU; 5 GB of memory)

Both get a rank-4 LoRA on the UNet's attention projections (to_q, to_k, to_v, to_out.0), the
adapter SD 1.5 LoRA scripts default to. A training step is `lorakit.finetune.train` for one step at
batch 2: the tiny model at its 32 px (8 x 8 latents), SD 1.5 at 64 px (8 x 8 latents too: the CPU
cannot afford 512 px, whose 64 x 64 latents cost far more per step). Steps are timed in alternation,
median of repeats. Table 2: SD 1.5 at ranks 4, 16 and 64, also in alternation.
"""

from __future__ import annotations

import dataclasses
import tempfile
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from lorakit.adapters import adapter_alphas, adapter_state, add_adapter
from lorakit.data import make_dataset
from lorakit.diffusion import TrainConfig, denoising_loss, encode_data
from lorakit.finetune import train
from lorakit.formats import save_lora
from lorakit.memory import measure_peak_memory, saved_for_backward
from lorakit.paths import PIPELINE_DIR
from lorakit.pipeline import load_pipeline
from lorakit.sd15 import sd15_pipeline
from lorakit.timing import interleaved_medians

REPEATS = 5
STEP = TrainConfig(steps=1, lr=1e-4, batch_size=2)
RANKS = (4, 16, 64)


def _encoded(pipe, scale: int):
    data = make_dataset(4, seed=0)
    return encode_data(pipe, dataclasses.replace(data, images=F.interpolate(data.images, scale_factor=scale, mode="nearest")))


def _lora_params(pipe) -> int:
    return sum(p.numel() for p in pipe.unet.parameters() if p.requires_grad)


def _file_bytes(pipe, name: str = "default") -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return save_lora(adapter_state(pipe, name), Path(tmp) / "lora.safetensors", alpha=adapter_alphas(pipe, name)).stat().st_size


def _step_costs(pipe, enc) -> dict[str, float]:
    """Bytes autograd keeps for backward, and the rise of the process's memory, over one training step."""
    with saved_for_backward(pipe.unet, pipe.text_encoder) as saved:
        denoising_loss(pipe, enc, STEP.batch_size, torch.Generator().manual_seed(0))
    with measure_peak_memory() as peak:
        train(pipe, enc, STEP, progress=False)
    return {"activations kept for backward, bytes": saved.bytes, "memory rise during a step, bytes": peak.peak_bytes}


def main() -> None:
    models = {"tiny": (load_pipeline(PIPELINE_DIR), 1), "SD 1.5 architecture": (sd15_pipeline(), 2)}
    rows = {}
    encoded = {}
    for name, (pipe, scale) in models.items():
        base = sum(p.numel() for part in (pipe.unet, pipe.text_encoder, pipe.vae) for p in part.parameters())
        add_adapter(pipe, rank=4, alpha=4, text_encoder=False)
        encoded[name] = _encoded(pipe, scale)
        lora = _lora_params(pipe)
        rows[name] = {"parameters (UNet, text encoder, VAE)": base, "LoRA parameters, rank 4": lora,
                      "LoRA file, bytes (float32)": _file_bytes(pipe), "AdamW moments, bytes": 2 * 4 * lora,
                      **_step_costs(pipe, encoded[name])}
    seconds = interleaved_medians({n: partial(train, p, encoded[n], STEP, progress=False) for n, (p, _) in models.items()},
                                  REPEATS)
    print("| | " + " | ".join(rows) + " | ratio |\n|---|---|---|---|")
    for key in next(iter(rows.values())):
        tiny, big = (rows[n][key] for n in rows)
        print(f"| {key} | {tiny:,} | {big:,} | {big / tiny:,.0f}x |")
    tiny, big = seconds.values()
    print(f"| seconds per step (batch 2) | {tiny:.3f} | {big:.3f} | {big / tiny:,.1f}x |")

    sd15 = models["SD 1.5 architecture"][0]
    sd15.unet.delete_adapters("default")
    for r in RANKS:
        add_adapter(sd15, rank=r, alpha=r, text_encoder=False, name=f"r{r}")

    def step(r: int) -> None:
        sd15.unet.set_adapter(f"r{r}")  # active and trainable: that adapter only
        train(sd15, encoded["SD 1.5 architecture"], STEP, progress=False)

    by_rank = interleaved_medians({r: partial(step, r) for r in RANKS}, REPEATS)
    print("\n| SD 1.5, rank | LoRA parameters | file MB | seconds per step | ratio to rank 4 |\n|---|---|---|---|---|")
    for r in RANKS:
        sd15.unet.set_adapter(f"r{r}")
        print(f"| {r} | {_lora_params(sd15):,} | {_file_bytes(sd15, f'r{r}') / 1e6:.2f} | {by_rank[r]:.3f} | "
              f"{by_rank[r] / by_rank[RANKS[0]]:.2f} |")


if __name__ == "__main__":
    main()
