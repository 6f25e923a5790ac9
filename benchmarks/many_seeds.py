"""What batching buys the many-seed experiments (notebooks 04 and 04b): training and measuring.

Run: .venv/bin/python benchmarks/many_seeds.py   (prints two tables; ratios are against the first row)
Every setting is timed side by side in one run, in alternating order, median of repeats.

1. Training five seeds' DreamBooth adapters (batch 4, LoRA on attention + convs + text encoder):
   one after another (`train_dreambooth` per seed) against stacked (`train_dreambooth_seeds`).
2. The collapse probe's images (token, edited, class and plain prompts): one `generate` call per
   prompt group against one batch for all (`generate_groups`, what `CollapseProbe.samples` does).
"""

from __future__ import annotations

from functools import partial

import torch

from lorakit.collapse import CollapseProbe
from lorakit.data import few_shot_instance
from lorakit.diffusion import TrainConfig
from lorakit.dreambooth import train_dreambooth, train_dreambooth_seeds
from lorakit.pipeline import load_pipeline
from lorakit.timing import interleaved_medians

SEEDS = [0, 1, 2, 3, 4]
STEPS = 30


def one_after_another(instance) -> None:
    """Each seed's adapter trained on its own."""
    for seed in SEEDS:
        train_dreambooth(load_pipeline(), instance, TrainConfig(steps=STEPS, lr=3e-3, batch_size=4, seed=seed))


def stacked(instance) -> None:
    """All seeds' adapters trained in one batched pass."""
    train_dreambooth_seeds([load_pipeline() for _ in SEEDS], instance, TrainConfig(steps=STEPS, lr=3e-3, batch_size=4),
                           SEEDS)


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
    table(f"training, {STEPS} steps per seed", training, "ms / seed-step", STEPS * len(SEEDS))
    probe, pipe = CollapseProbe(instance), load_pipeline()
    n_images = sum(len(v) for v in probe.samples(pipe).values())
    sampling = interleaved_medians({"probe: one generate call per prompt group": partial(per_group, probe, pipe),
                                    "probe: one batch (generate_groups)": partial(probe.samples, pipe)}, 2 * repeats + 1)
    table(f"the collapse probe's {n_images} images, {probe.sample_steps} sampler steps", sampling, "ms / image", n_images)


if __name__ == "__main__":
    main()
