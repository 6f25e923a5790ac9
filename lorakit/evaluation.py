"""Measuring a pipeline: attribute accuracy per prompt and distance to the real image distribution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from lorakit.classifier import AttributeClassifier, features, load_classifier
from lorakit.data import make_dataset, parse_prompt, pretraining_prompts
from lorakit.metrics import attribute_accuracy, frechet_distance
from lorakit.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate


@dataclass
class QualityReport:
    """Accuracy per prompt and overall, Fréchet distance to real images, and the images made."""

    rows: list[dict[str, float | str]]
    overall: dict[str, float]
    frechet: float
    images: torch.Tensor = field(repr=False)  # (N, 3, 32, 32) uint8, n_per_prompt per prompt in order
    prompts: list[str] = field(repr=False)

    def worst(self, group: str) -> dict[str, float | str]:
        """The prompt row with the lowest accuracy for one attribute group."""
        return min(self.rows, key=lambda r: r[group])


def evaluate_prompts(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str] | None = None,
    n_per_prompt: int = 16,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    classifier: AttributeClassifier | None = None,
    prompts_per_batch: int = 4,
) -> QualityReport:
    """Generate n_per_prompt images for each prompt (fixed seeds) and score them with the classifier.

    Defaults: every "a {size} {colour} {shape}" pre-training prompt. The Fréchet distance compares
    all generated images with as many real images drawn for the same attribute words.
    """
    prompts = list(prompts) if prompts is not None else pretraining_prompts()
    clf = classifier if classifier is not None else load_classifier()
    images, rows = [], []
    for i in tqdm(range(0, len(prompts), prompts_per_batch), desc="evaluate prompts", leave=False):
        batch = prompts[i : i + prompts_per_batch]
        imgs = generate(pipe, batch, seed=seed, n_per_prompt=n_per_prompt,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
        for j, prompt in enumerate(batch):
            part = imgs[j * n_per_prompt : (j + 1) * n_per_prompt]
            rows.append({"prompt": prompt, **attribute_accuracy(part, prompt, clf)})
            images.append(part)
    all_images = torch.cat(images)
    all_prompts = [p for p in prompts for _ in range(n_per_prompt)]
    overall = attribute_accuracy(all_images, all_prompts, clf)
    words = sorted({w for p in prompts for w in parse_prompt(p).values()})
    real = make_dataset(len(all_images), seed=seed + 10_000, include=words)
    fd = frechet_distance(features(clf, all_images), features(clf, real.images))
    return QualityReport(rows, overall, fd, all_images, all_prompts)
