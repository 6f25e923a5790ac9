"""Generation speed of the shipped tiny pipeline: a batch of 16 images at several sampler settings.

Run: .venv/bin/python benchmarks/generate.py   (prints a table; ratios are against the default)
All settings are timed side by side in one run, in alternating order, median of repeats.
"""

from __future__ import annotations

from functools import partial

import torch

from lorakit.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate, load_pipeline
from lorakit.timing import interleaved_medians

SETTINGS = [
    ("default: DPM-Solver 20 steps, guidance 4", DEFAULT_STEPS, DEFAULT_GUIDANCE),
    ("10 steps, guidance 4", 10, DEFAULT_GUIDANCE),
    ("20 steps, no guidance (1 UNet pass/step)", DEFAULT_STEPS, 1.0),
    ("50 steps, guidance 4 (diffusers' default steps)", 50, DEFAULT_GUIDANCE),
]
PROMPTS = ["a large red circle", "a small blue square", "a large yellow triangle", "a small purple circle"] * 4


def main(repeats: int = 7) -> None:
    """Time each setting `repeats` times, interleaved, and print medians and ratios."""
    pipe = load_pipeline()
    print(f"device: {pipe.device}, torch threads: {torch.get_num_threads()}, batch: {len(PROMPTS)} images")
    medians = interleaved_medians({name: partial(generate, pipe, PROMPTS, num_inference_steps=steps, guidance_scale=guidance)
                                   for name, steps, guidance in SETTINGS}, repeats)
    base = medians[SETTINGS[0][0]]
    print(f"{'setting':50s} {'s / 16 images':>14s} {'ms / image':>11s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:50s} {med:14.3f} {1000 * med / len(PROMPTS):11.1f} {med / base:6.2f}")


if __name__ == "__main__":
    main()
