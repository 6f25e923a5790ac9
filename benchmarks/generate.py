"""Generation speed of the shipped tiny pipeline: a batch of 16 images at several sampler settings.

Run: .venv/bin/python benchmarks/generate.py   (prints a table; ratios are against the default)
All settings are timed side by side in one run, in alternating order, median of repeats.
"""

from __future__ import annotations

import statistics
import time

import torch

from lorakit.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate, load_pipeline

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
    for _, steps, guidance in SETTINGS:  # warm-up
        generate(pipe, PROMPTS, num_inference_steps=steps, guidance_scale=guidance)
    times: dict[str, list[float]] = {name: [] for name, _, _ in SETTINGS}
    for r in range(repeats):
        order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
        for name, steps, guidance in order:
            t0 = time.perf_counter()
            generate(pipe, PROMPTS, num_inference_steps=steps, guidance_scale=guidance)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[SETTINGS[0][0]])
    print(f"{'setting':50s} {'s / 16 images':>14s} {'ms / image':>11s} {'ratio':>6s}")
    for name, _, _ in SETTINGS:
        med = statistics.median(times[name])
        print(f"{name:50s} {med:14.3f} {1000 * med / len(PROMPTS):11.1f} {med / base:6.2f}")


if __name__ == "__main__":
    main()
