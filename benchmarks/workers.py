"""What running independent jobs side by side buys (`lorakit.workers.parallel_map`): training, then sampling.

Run: .venv/bin/python benchmarks/workers.py   (prints two tables; ratios are against the first row)
Both ways are timed side by side in one run, in alternating order, median of repeats; the forked
workers' start-up is inside the time.

1. Four LoRA fine-tuning runs (notebook 03's: rank 4 on the UNet and text-encoder attention, batch
   32), one after another in this process with all its threads, against `parallel_map` (one worker
   process per core, one thread each).
2. Four batches of 64 images (10 sampler steps), the same two ways: sampling already keeps every
   core busy, so the notebooks keep it in their own process.
"""

from __future__ import annotations

from functools import partial

import torch

from lorakit.data import make_dataset
from lorakit.diffusion import TrainConfig, encode_data
from lorakit.finetune import finetune
from lorakit.pipeline import generate, load_pipeline
from lorakit.timing import interleaved_medians
from lorakit.workers import default_workers, parallel_map

JOBS = 4
STEPS = 15
DATA = encode_data(load_pipeline(), make_dataset(256, seed=1))  # (read by the forked workers too)


def train_job(seed: int) -> float:
    """One LoRA fine-tuning run of STEPS steps; returns its last loss."""
    _, hist = finetune(load_pipeline(), DATA, TrainConfig(steps=STEPS, lr=3e-3, batch_size=32, seed=seed), progress=False)
    return hist.loss[-1]


def sample_job(seed: int) -> int:
    """64 images at the kit's default sampler settings; returns how many."""
    return len(generate(load_pipeline(), ["a small red circle", "a large blue square"], seed=seed, n_per_prompt=32))


def table(title: str, job, unit: str, per_job: int, repeats: int) -> None:
    """Time JOBS jobs one after another against parallel_map, and print medians and the ratio."""
    medians = interleaved_medians({
        f"one after another ({torch.get_num_threads()} threads)": lambda: [job(s) for s in range(JOBS)],
        f"parallel_map ({default_workers()} workers, 1 thread each)": partial(parallel_map, job, range(JOBS))}, repeats)
    base = next(iter(medians.values()))
    print(f"\n{title}")
    print(f"{'way':45s} {f's / {JOBS} jobs':>12s} {unit:>14s} {'ratio':>6s}")
    for name, med in medians.items():
        print(f"{name:45s} {med:12.2f} {1000 * med / (JOBS * per_job):14.1f} {med / base:6.2f}")


def main(repeats: int = 3) -> None:
    """Both tables, `repeats` interleaved rounds each."""
    print(f"torch threads: {torch.get_num_threads()}, workers: {default_workers()}")
    table(f"{JOBS} LoRA fine-tuning runs, {STEPS} steps of batch 32", train_job, "ms / step", STEPS, repeats)
    table(f"{JOBS} batches of 64 images, 10 sampler steps", sample_job, "ms / image", 64, repeats)


if __name__ == "__main__":
    main()
