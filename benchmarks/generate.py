"""Generation speed of the shipped tiny pipeline: sampler settings, and how a large request is batched.

Run: .venv/bin/python benchmarks/generate.py   (prints two tables; ratios are against the first row)
All settings are timed side by side in one run, in alternating order, median of repeats.

1. A batch of 16 images at several sampler settings.
2. 256 images (the size of the notebooks' evaluation batches) in one pipeline call, as diffusers batches
   it (every image through the UNet and the VAE decoder at once), against `generate`'s chunks
   (GENERATE_CHUNK images per pipeline call, DECODE_CHUNK per VAE decode).
3. 128 images from a pipeline with a rank-4 LoRA (attention, convolutions, text encoder), the adapter
   unmerged (an extra small matmul per adapted layer) against merged while sampling (`merged_adapters`,
   what `generate` does).
"""

from __future__ import annotations

from functools import partial

import torch

from lorakit.adapters import add_adapter
from lorakit.pipeline import (
    DECODE_CHUNK,
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    GENERATE_CHUNK,
    generate,
    load_pipeline,
    merged_adapters,
)
from lorakit.timing import interleaved_medians

SETTINGS = [
    (f"default: DPM-Solver {DEFAULT_STEPS} steps, guidance {DEFAULT_GUIDANCE:g}", DEFAULT_STEPS, DEFAULT_GUIDANCE),
    ("20 steps, guidance 4", 20, DEFAULT_GUIDANCE),
    (f"{DEFAULT_STEPS} steps, no guidance (1 UNet pass/step)", DEFAULT_STEPS, 1.0),
    ("50 steps, guidance 4 (diffusers' default steps)", 50, DEFAULT_GUIDANCE),
]
PROMPTS = ["a large red circle", "a small blue square", "a large yellow triangle", "a small purple circle"] * 4


def one_call(pipe, prompts: list[str], steps: int = 10) -> torch.Tensor:
    """All images in one pipeline call, seeded as `generate` seeds them: diffusers' own batching."""
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(len(prompts))]
    with torch.no_grad():
        return pipe(prompt=prompts, generator=generators, num_inference_steps=steps, guidance_scale=DEFAULT_GUIDANCE,
                    output_type="pt").images  # (B, 3, 32, 32) in [0, 1]


def chunking(pipe, repeats: int = 5, n: int = 256) -> None:
    """Table 2: n images at 10 sampler steps in one call against generate's chunks; checks they are the same images."""
    prompts = (PROMPTS * (n // len(PROMPTS) + 1))[:n]
    whole = (one_call(pipe, prompts) * 255).round()
    chunked = generate(pipe, prompts, num_inference_steps=10).float()
    print(f"\n{n} images, 10 steps: largest pixel difference between the two ways {(whole - chunked).abs().max():.0f}/255")
    medians = interleaved_medians({
        "one pipeline call (diffusers batches everything)": partial(one_call, pipe, prompts),
        f"generate: {GENERATE_CHUNK} per call, decoded {DECODE_CHUNK} at a time": partial(
            generate, pipe, prompts, num_inference_steps=10)}, repeats)
    base = next(iter(medians.values()))
    print(f"{'way':50s} {f's / {n} images':>14s} {'ms / image':>11s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:50s} {med:14.3f} {1000 * med / n:11.1f} {med / base:6.2f}")


def merged(pipe, prompts: list[str]) -> torch.Tensor:
    """One pipeline call with the adapters merged into the weights while it runs."""
    with merged_adapters(pipe):
        return one_call(pipe, prompts)


def merging(repeats: int = 5, n: int = 128) -> None:
    """Table 3: n images from a LoRA pipeline, adapter unmerged against merged while sampling."""
    pipe = add_adapter(load_pipeline(), rank=4, conv=True, seed=0)
    for layer in pipe.unet.modules():  # a trained-looking adapter: B is zero at init, which would change nothing
        if hasattr(layer, "lora_B"):
            for b in layer.lora_B.values():
                torch.nn.init.normal_(b.weight, std=0.02)
    prompts = (PROMPTS * (n // len(PROMPTS) + 1))[:n]
    gap = (one_call(pipe, prompts) - merged(pipe, prompts)).abs().max() * 255
    print(f"\n{n} images from a rank-4 LoRA pipeline, 10 steps: largest pixel difference {gap:.1f}/255")
    medians = interleaved_medians({"adapter unmerged": partial(one_call, pipe, prompts),
                                   "merged while sampling (generate)": partial(merged, pipe, prompts)}, repeats)
    base = next(iter(medians.values()))
    print(f"{'way':50s} {f's / {n} images':>14s} {'ms / image':>11s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:50s} {med:14.3f} {1000 * med / n:11.1f} {med / base:6.2f}")


def main(repeats: int = 7) -> None:
    """Time each setting `repeats` times, interleaved, and print medians and ratios; then table 2."""
    pipe = load_pipeline()
    print(f"device: {pipe.device}, torch threads: {torch.get_num_threads()}, batch: {len(PROMPTS)} images")
    medians = interleaved_medians({name: partial(generate, pipe, PROMPTS, num_inference_steps=steps, guidance_scale=guidance)
                                   for name, steps, guidance in SETTINGS}, repeats)
    base = medians[SETTINGS[0][0]]
    print(f"{'setting':50s} {'s / 16 images':>14s} {'ms / image':>11s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:50s} {med:14.3f} {1000 * med / len(PROMPTS):11.1f} {med / base:6.2f}")
    chunking(pipe)
    merging()


if __name__ == "__main__":
    main()
