"""DreamBooth-style few-shot LoRA (Ruiz et al. 2022) on the tiny pipeline, with its regularisers.

`train_dreambooth` = a fresh peft adapter (`lorakit.adapters.add_adapter`) + the one training loop
(`lorakit.finetune.train`) + optional checkpoints; `class_images` makes the prior-preservation set
the way diffusers' train_dreambooth_lora.py does (the frozen base model's samples for the class
prompt); `early_stopping_step` picks a checkpoint from a validation signal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from diffusers import StableDiffusionPipeline

from lorakit.adapters import CheckpointSaver, add_adapter, load_adapter_weights
from lorakit.classifier import AttributeClassifier, classify, predict_words
from lorakit.collapse import CollapseProbe
from lorakit.data import IMAGE_SIZE, Attributes, ShapesDataset
from lorakit.finetune import train
from lorakit.metrics import attribute_accuracy, image_vendi
from lorakit.pipeline import generate


@dataclass
class Run:
    """One trained adapter: its training losses and time, and where its checkpoints are (if any)."""

    losses: list[float]
    seconds: float
    checkpoints: dict[int, Path]


def train_dreambooth(
    pipe: StableDiffusionPipeline,
    instance: ShapesDataset,
    steps: int = 150,
    lr: float = 3e-3,
    rank: int = 4,
    dropout: float = 0.0,
    weight_decay: float = 0.0,
    prior: ShapesDataset | None = None,
    prior_weight: float = 1.0,
    augment: bool = False,
    conv: bool = True,
    batch_size: int = 4,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 25,
    overwrite: bool = False,
    progress: bool = False,
) -> Run:
    """Add a LoRA to `pipe` (UNet attention + ResNet convs + text encoder) and train it on the instance images.

    With `checkpoint_dir`, the adapter is saved at step 0 and every `checkpoint_every` steps; a
    folder holding an earlier run's checkpoints is replaced only with `overwrite=True` (see
    `lorakit.adapters.CheckpointSaver`). Every argument is checked before the pipeline changes.
    """
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be whole numbers >= 1, got steps={steps!r}, batch_size={batch_size!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    saver = None
    if checkpoint_dir is not None:  # checked (and refused) before the adapter is added
        saver = CheckpointSaver(pipe, checkpoint_dir, checkpoint_every, overwrite=overwrite)
    add_adapter(pipe, rank=rank, dropout=dropout, conv=conv, seed=seed)
    if saver is not None:
        saver(0, float("nan"))  # the starting point: the base model's behaviour
    start = time.perf_counter()
    losses = train(pipe, instance, steps, lr=lr, batch_size=batch_size, seed=seed, weight_decay=weight_decay,
                   prior=prior, prior_weight=prior_weight, augment=augment, progress=progress, on_step=saver)
    seconds = time.perf_counter() - start  # includes checkpoint writes (a few ms each)
    return Run(losses, seconds, saver.paths if saver is not None else {})


def class_images(
    pipe: StableDiffusionPipeline, prompt: str, n: int, classifier: AttributeClassifier, seed: int = 50_000
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
    seed_offset: int = 5000,
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
        images = generate(pipe, probe.token_prompt, seed=probe.seed + seed_offset, n_per_prompt=probe.n,
                          num_inference_steps=probe.sample_steps)
        scores[step] = {"fidelity": attribute_accuracy(images, probe.identity, probe.classifier)["all"],
                        "diversity": image_vendi(images)}
    good = [s for s, v in scores.items() if v["fidelity"] >= min_fidelity]
    best = max(good, key=lambda s: scores[s]["diversity"]) if good else max(scores, key=lambda s: scores[s]["fidelity"])
    load_adapter_weights(pipe, checkpoints[best])
    return best, scores

