"""Where the kit's random streams start: named seeds, and torch's global RNG seeded only inside a block.

Generated images come from per-image generators (`lorakit.pipeline.generate`: image i uses seed + i)
and rendered images from `make_dataset(seed=...)`. Each kind of measurement draws from its own range
of seeds, far from training's (0, 1, 2, ...), so a measurement never reuses a training run's noise and
two measurements never share samples by accident. The ranges live here, named, instead of as bare
numbers where they are used.

Module initialisers (nn.Linear, peft's LoRA init) and nn.Dropout draw from torch's *global* RNG and
take no torch.Generator. `seeded` seeds it for one block and then gives the caller's RNG state back,
so a library call is reproducible without resetting the learner's own random stream.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

# Generated images (generate(seed=...)).
EVAL_SEED = 1000  # fine-tuning's progress evaluations; the collapse probe's token prompt
PROBE_OFFSETS = {"edit": 100, "class": 200, "plain": 300}  # the collapse probe's other prompts, from its seed
VALIDATION_OFFSET = 5000  # early stopping's validation samples, beyond every test sample of the probe
ADAPTER_CHECK_SEED = 500  # the shipped adapters' accuracy check when they are trained
QUICK_ACCURACY_SEED = 1234  # pre-training's quick accuracy check
CLASS_IMAGES_SEED = 50_000  # DreamBooth's prior-preservation set (the base model's own samples)

# Rendered reference images (make_dataset(seed=...)).
REAL_OFFSET = 10_000  # real images compared with a batch of generated ones (evaluation.evaluate_prompts)
PROBE_REAL_SEED = 7  # real images of the collapse probe's object
JUDGE_CENTRE_SEED = 13  # real images whose mean judge feature centres judge_diversity (evaluation)
PIXEL_CALIBRATION_SEED = 90_210  # renders the pixel rules are calibrated on


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded with `seed`, then restore the caller's RNG state.

    seed=None leaves the global RNG alone (the block draws from the caller's stream, and advances it).
    """
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
