"""The from-scratch LoRA layer against peft's, and what LoRA costs at inference, on the tiny UNet.

Run: .venv/bin/python benchmarks/lora_layer.py
Every variant is timed side by side in one run, in alternating order, median of repeats, and
printed as a ratio. Bars: a from-scratch training step <= 1.2x peft's; merged inference <= 1.05x base.
"""

from __future__ import annotations

from typing import Callable

import torch
from peft import LoraConfig

from lorakit.lora import add_lora, merge_lora
from lorakit.pipeline import LORA_TARGETS, load_pipeline
from lorakit.timing import interleaved_medians

RANK = 4
BATCH = 32  # a training batch; also the UNet batch of 16 images with classifier-free guidance


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, 4, 8, 8, generator=g), torch.randint(0, 1000, (BATCH,), generator=g),
            torch.randn(BATCH, 16, 64, generator=g))


def _train_step(unet: torch.nn.Module) -> Callable[[], None]:
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x, t, c = _inputs()

    def step() -> None:
        loss = unet(x, t, encoder_hidden_states=c).sample.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _forward(unet: torch.nn.Module) -> Callable[[], None]:
    x, t, c = _inputs(1)

    def run() -> None:
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=c)

    return run


def main(repeats: int = 21) -> None:
    """Print both tables."""
    torch.manual_seed(0)
    scratch, peft_pipe = load_pipeline(device="cpu"), load_pipeline(device="cpu")
    add_lora(scratch.unet, LORA_TARGETS, rank=RANK, alpha=RANK)
    peft_pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=list(LORA_TARGETS)))
    train = interleaved_medians({"peft LoRA": _train_step(peft_pipe.unet), "from-scratch LoRA": _train_step(scratch.unet)}, repeats)

    base = load_pipeline(device="cpu")
    merged = load_pipeline(device="cpu")
    add_lora(merged.unet, LORA_TARGETS, rank=RANK, alpha=RANK)
    merge_lora(merged.unet)
    infer = interleaved_medians({"base UNet": _forward(base.unet), "LoRA unmerged": _forward(scratch.unet),
                   "LoRA merged": _forward(merged.unet)}, repeats)

    print(f"torch threads: {torch.get_num_threads()}, rank {RANK}, batch {BATCH}, median of {repeats}")
    print(f"{'training step':22s} {'ms':>8s} {'ratio':>7s}")
    for name, sec in train.items():
        print(f"{name:22s} {1000 * sec:8.1f} {sec / train['peft LoRA']:7.2f}")
    print(f"{'UNet forward':22s} {'ms':>8s} {'ratio':>7s}")
    for name, sec in infer.items():
        print(f"{name:22s} {1000 * sec:8.1f} {sec / infer['base UNet']:7.2f}")


if __name__ == "__main__":
    main()
