"""DreamBooth-style few-shot LoRA (Ruiz et al. 2022) on the tiny pipeline, with its regularisers.

`train_dreambooth` = a fresh peft adapter (`lorakit.adapters.add_adapter`) + the one training loop
(`lorakit.finetune.train`) + optional checkpoints; `class_images` makes the prior-preservation set
the way diffusers' train_dreambooth_lora.py does (the frozen base model's samples for the class
prompt); `early_stopping_step` picks a checkpoint from a validation signal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from diffusers import StableDiffusionPipeline

from lorakit.adapters import CheckpointSaver, add_adapter, load_adapter_weights
from lorakit.classifier import AttributeClassifier, classify, predict_words
from lorakit.collapse import CollapseProbe
from lorakit.data import IMAGE_SIZE, Attributes, ShapesDataset
from lorakit.diffusion import TrainConfig, require_config
from lorakit.finetune import Prior, train
from lorakit.pipeline import generate
from lorakit.seeds import CLASS_IMAGES_SEED, VALIDATION_OFFSET, seeded
from lorakit.stacked import train_stacked


@dataclass
class Run:
    """One trained adapter: its training losses and time, and where its checkpoints are (if any)."""

    losses: list[float]
    seconds: float
    checkpoints: dict[int, Path]


@dataclass(frozen=True)
class Checkpoints:
    """Where and how often `train_dreambooth` saves the adapter: at step 0 and every `every` steps. A
    folder holding an earlier run's checkpoints is replaced only with `overwrite=True`."""

    folder: str | Path
    every: int = 25
    overwrite: bool = False


DREAMBOOTH_CONFIG = TrainConfig(steps=150, lr=3e-3, batch_size=4)  # train_dreambooth's default


def train_dreambooth(
    pipe: StableDiffusionPipeline,
    instance: ShapesDataset,
    config: TrainConfig = DREAMBOOTH_CONFIG,
    rank: int = 4,
    dropout: float = 0.0,
    conv: bool = True,
    prior: Prior | None = None,
    checkpoints: Checkpoints | None = None,
    progress: bool = False,
) -> Run:
    """Add a LoRA to `pipe` (UNet attention + ResNet convs + text encoder) and train it on the instance images.

    `config` holds steps, learning rate (None: 3e-3), batch, seed, weight decay and augmentation; `prior`
    adds prior preservation. With `checkpoints`, the adapter is saved along the way (see
    `lorakit.adapters.CheckpointSaver`). Every argument is checked before the pipeline changes.
    """
    config = require_config(config, default_lr=DREAMBOOTH_CONFIG.lr)
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"prior must be a Prior (e.g. Prior(class_images(...))), got {type(prior).__name__}")
    saver = None
    if checkpoints is not None:  # checked (and refused) before the adapter is added
        saver = CheckpointSaver(pipe, checkpoints.folder, checkpoints.every, overwrite=checkpoints.overwrite)
    with seeded(config.seed):  # the A factors' init, then LoRA dropout's masks, draw from torch's global RNG
        add_adapter(pipe, rank=rank, dropout=dropout, conv=conv, seed=None)
        if saver is not None:
            saver(0, float("nan"))  # the starting point: the base model's behaviour
        start = time.perf_counter()
        losses = train(pipe, instance, config, prior=prior, progress=progress, on_step=saver)
        seconds = time.perf_counter() - start  # includes checkpoint writes (a few ms each)
    return Run(losses, seconds, saver.paths if saver is not None else {})


def train_dreambooth_seeds(
    pipes: Sequence[StableDiffusionPipeline],
    instance: ShapesDataset,
    config: TrainConfig,
    seeds: Sequence[int],
    rank: int = 4,
    dropout: float = 0.0,
    conv: bool = True,
    prior: Prior | None = None,
    checkpoints: Sequence[Checkpoints] | None = None,
    progress: bool = False,
) -> list[Run]:
    """`train_dreambooth` once per seed, pipes[k] with seeds[k], all seeds trained together (`lorakit.stacked`).

    Each adapter starts from its seed's init and sees its seed's batches, as in `train_dreambooth`;
    LoRA dropout's masks are drawn differently, and float rounding differs. `config.seed` is replaced
    by each seed. A run's `seconds` is the stacked run's time divided by the number of seeds.
    """
    config = require_config(config, default_lr=DREAMBOOTH_CONFIG.lr)
    if len(seeds) != len(pipes):
        raise ValueError(f"one seed per pipeline: got {len(seeds)} seeds for {len(pipes)} pipelines")
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"prior must be a Prior (e.g. Prior(class_images(...))), got {type(prior).__name__}")
    if checkpoints is not None and len(checkpoints) != len(pipes):
        raise ValueError(f"one Checkpoints per seed: got {len(checkpoints)} for {len(seeds)} seeds")
    configs = [replace(config, seed=s) for s in seeds]  # checks each seed
    savers = [None] * len(pipes)
    if checkpoints is not None:  # checked (and refused) before any adapter is added
        savers = [CheckpointSaver(p, c.folder, c.every, overwrite=c.overwrite) for p, c in zip(pipes, checkpoints)]
    for pipe, c, saver in zip(pipes, configs, savers):
        with seeded(c.seed):  # the A factors' init, as train_dreambooth draws it
            add_adapter(pipe, rank=rank, dropout=dropout, conv=conv, seed=None)
        if saver is not None:
            saver(0, float("nan"))
    start = time.perf_counter()
    with seeded(configs[0].seed):  # LoRA dropout's masks
        losses = train_stacked(pipes, instance, configs, prior, on_step=savers if checkpoints is not None else None,
                               progress=progress)
    seconds = (time.perf_counter() - start) / len(pipes)
    return [Run(loss, seconds, saver.paths if saver is not None else {}) for loss, saver in zip(losses, savers)]


def class_images(
    pipe: StableDiffusionPipeline, prompt: str, n: int, classifier: AttributeClassifier, seed: int = CLASS_IMAGES_SEED
) -> ShapesDataset:
    """The base model's own samples for the class prompt, captioned with it: DreamBooth's prior-preservation set.

    Attributes (for plots and checks only; training uses the captions) come from the classifier.
    """
    images = generate(pipe, prompt, seed=seed, n_per_prompt=n)
    words = predict_words(classifier, images)
    xy = classify(classifier, images)["position"] * IMAGE_SIZE  # (n, 2) pixels
    attrs = [Attributes(w["colour"], w["shape"], w["size"], w["style"], float(x), float(y)) for w, (x, y) in zip(words, xy)]
    return ShapesDataset(images, [prompt] * n, attrs)


def early_stopping_step(
    pipe: StableDiffusionPipeline,
    checkpoints: dict[int, Path],
    probe: CollapseProbe,
    min_fidelity: float = 0.9,
    seed_offset: int = VALIDATION_OFFSET,
) -> tuple[int, dict[int, dict[str, float]]]:
    """Early stopping on validation diversity: among checkpoints whose fidelity reaches `min_fidelity`, the most diverse.

    Validation samples the token prompt with seeds unused by the test measurements (seed_offset).
    Falls back to the most faithful checkpoint when none reaches the bar. Leaves the chosen
    checkpoint loaded in `pipe`; returns (step, {step: {"fidelity", "diversity"}}).
    """
    if not checkpoints:
        raise ValueError("no checkpoints to choose from: train with checkpoint_dir set")
    scores = {}
    for step, path in checkpoints.items():
        load_adapter_weights(pipe, path)
        token = probe.token_scores(probe.group_samples(pipe, "token", seed_offset=seed_offset))
        scores[step] = {"fidelity": token["fidelity"], "diversity": token["diversity"]}
    best = choose_checkpoint(scores, min_fidelity)
    load_adapter_weights(pipe, checkpoints[best])
    return best, scores


def choose_checkpoint(scores: dict[int, dict[str, float]], min_fidelity: float = 0.9) -> int:
    """Early stopping's rule: among checkpoints whose fidelity reaches the bar, the most diverse (the earliest among
    ties); when none reaches it, the most faithful. `scores`: {step: {"fidelity", "diversity"}}."""
    good = [s for s, v in scores.items() if v["fidelity"] >= min_fidelity]
    if good:
        return max(good, key=lambda s: scores[s]["diversity"])  # max keeps the first of equal keys: the earliest
    return max(scores, key=lambda s: scores[s]["fidelity"])

