"""What batching buys the many-seed experiments (notebooks 04, 04b and 07b): training and measuring.

Run: .venv/bin/python benchmarks/many_seeds.py   (prints three tables; ratios are against the first row)
Every setting is timed side by side in one run, in alternating order, median of repeats.

1. Training five seeds' DreamBooth adapters (batch 4, LoRA on attention + convs + text encoder):
   one after another (`train_dreambooth` per seed) against stacked (`train_dreambooth_seeds`).
2. Training five seeds' erasers (batch 8, LoRA on the cross-attention keys and values, two frozen
   passes per step): one after another (`train_control`) against stacked (`train_control_seeds`).
3. The collapse probe's images (token, edited, class and plain prompts): one `generate` call per
   prompt group against one batch for all (`generate_groups`, what `CollapseProbe.samples` does).
"""

from __future__ import annotations

from functools import partial

import torch

from lorakit.collapse import CollapseProbe
from lorakit.control import CROSS_ATTENTION_KV, add_control_adapter, erasure_targets, train_control, train_control_seeds
from lorakit.data import few_shot_instance, make_dataset
from lorakit.diffusion import TrainConfig, encode_data
from lorakit.dreambooth import train_dreambooth, train_dreambooth_seeds
from lorakit.pipeline import load_pipeline
from lorakit.timing import interleaved_medians

SEEDS = [0, 1, 2, 3, 4]
STEPS = 30
ERASE_TARGETS = erasure_targets("red", ["small", "large"], ["circle", "square", "triangle"])


def one_after_another(instance) -> None:
    """Each seed's adapter trained on its own."""
    for seed in SEEDS:
        train_dreambooth(load_pipeline(), instance, TrainConfig(steps=STEPS, lr=3e-3, batch_size=4, seed=seed))


def stacked(instance) -> None:
    """All seeds' adapters trained in one batched pass."""
    train_dreambooth_seeds([load_pipeline() for _ in SEEDS], instance, TrainConfig(steps=STEPS, lr=3e-3, batch_size=4),
                           SEEDS)


def erasers_one_after_another(latents) -> None:
    """Each seed's eraser trained on its own."""
    for seed in SEEDS:
        pipe = add_control_adapter(load_pipeline(), targets=CROSS_ATTENTION_KV, name="erase", seed=seed)
        train_control(pipe, latents, ERASE_TARGETS, "erasure", TrainConfig(steps=STEPS, lr=1e-3, batch_size=8, seed=seed),
                      name="erase", progress=False)


def erasers_stacked(latents) -> None:
    """All seeds' erasers trained in one batched pass."""
    pipes = [add_control_adapter(load_pipeline(), targets=CROSS_ATTENTION_KV, name="erase", seed=s) for s in SEEDS]
    train_control_seeds(pipes, latents, ERASE_TARGETS, "erasure", TrainConfig(steps=STEPS, lr=1e-3, batch_size=8), SEEDS,
                        name="erase", progress=False)


def per_group(probe: CollapseProbe, pipe) -> None:
    """The probe's four prompt groups, one generate call each."""
    for group in ("token", "edit", "class", "plain"):
        probe.group_samples(pipe, group)


def table(title: str, medians: dict[str, float], unit: str, per: int) -> None:
    """Print medians with ratios against the first row."""
    first = next(iter(medians.values()))
    print(f"\n{title}\n{'setting':44s} {'s':>7s} {unit:>16s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:44s} {med:7.2f} {1000 * med / per:16.1f} {med / first:6.2f}")


def main(repeats: int = 3) -> None:
    """Time both comparisons and print them."""
    print(f"torch threads: {torch.get_num_threads()}")
    instance = few_shot_instance(5)
    training = interleaved_medians({"5 seeds one after another": partial(one_after_another, instance),
                                    "5 seeds stacked": partial(stacked, instance)}, repeats)
    table(f"DreamBooth training, {STEPS} steps per seed", training, "ms / seed-step", STEPS * len(SEEDS))
    latents = encode_data(load_pipeline(), make_dataset(256, seed=3))
    erasing = interleaved_medians({"5 erasers one after another": partial(erasers_one_after_another, latents),
                                   "5 erasers stacked": partial(erasers_stacked, latents)}, repeats)
    table(f"eraser training, {STEPS} steps per seed", erasing, "ms / seed-step", STEPS * len(SEEDS))
    probe, pipe = CollapseProbe(instance), load_pipeline()
    n_images = sum(len(v) for v in probe.samples(pipe).values())
    sampling = interleaved_medians({"probe: one generate call per prompt group": partial(per_group, probe, pipe),
                                    "probe: one batch (generate_groups)": partial(probe.samples, pipe)}, 2 * repeats + 1)
    table(f"the collapse probe's {n_images} images, {probe.sample_steps} sampler steps", sampling, "ms / image", n_images)


if __name__ == "__main__":
    main()
