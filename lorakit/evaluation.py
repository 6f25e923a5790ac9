"""Measuring a pipeline: images scored against their prompts, accuracy per prompt, distance to real images,
and diversity as the judge sees it.

`score_prompts` is the one place where the course generates images for prompts and asks the judge
whether each shows what its prompt names; every notebook and training loop that scores a pipeline
calls it. `judge_diversity` is the diversity every verdict uses: counted over valid objects only.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from lorakit.classifier import FEATURE_DIM, OBJECT_THRESHOLD, AttributeClassifier, classify, features, load_classifier
from lorakit.data import make_dataset, parse_prompt, pretraining_prompts
from lorakit.metrics import accuracy_of, frechet_distance, right_per_image, vendi_score
from lorakit.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate
from lorakit.seeds import JUDGE_CENTRE_SEED, REAL_OFFSET

JUDGE_CENTRE_N = 512  # real images whose mean judge feature is subtracted before the cosine kernel
_centres: "weakref.WeakKeyDictionary[AttributeClassifier, torch.Tensor]" = weakref.WeakKeyDictionary()


@dataclass
class Scored:
    """Images generated for prompts, and per image whether the judge reads what its prompt names."""

    images: torch.Tensor = field(repr=False)  # (N, 3, H, W) uint8 (32 px on the tiny model), n_per_prompt per prompt in order
    prompts: list[str] = field(repr=False)  # (N,) the prompt of each image
    right: dict[str, np.ndarray] = field(repr=False)  # group -> (N,) 1.0 / 0.0, NaN where the prompt names no such word

    @property
    def accuracy(self) -> dict[str, float]:
        """Share right per attribute group (over the images whose prompt names it) and "all"."""
        return accuracy_of(self.right)

    def by_prompt(self) -> list[dict[str, float | str]]:
        """One row per distinct prompt, in order: the prompt and its accuracy per group."""
        prompts = list(dict.fromkeys(self.prompts))
        index = np.array(self.prompts)
        return [{"prompt": p, **accuracy_of({g: v[index == p] for g, v in self.right.items()})} for p in prompts]


def score_prompts(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str] | str,
    n_per_prompt: int = 1,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    classifier: AttributeClassifier | None = None,
) -> Scored:
    """Generate n_per_prompt images per prompt (image i from seed + i) and judge each against its prompt."""
    images = generate(pipe, prompts, seed=seed, n_per_prompt=n_per_prompt, num_inference_steps=steps,
                      guidance_scale=guidance)
    return score_images(images, prompts, n_per_prompt, classifier)


def score_images(
    images: torch.Tensor, prompts: Sequence[str] | str, n_per_prompt: int = 1, classifier: AttributeClassifier | None = None
) -> Scored:
    """Judge images made n_per_prompt per prompt, in `generate`'s order, against their prompts."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    each = [p for p in prompts for _ in range(n_per_prompt)]
    return Scored(images, each, right_per_image(images, each, classifier))


def concat_scored(parts: Sequence[Scored]) -> Scored:
    """Several scored batches as one, in order (a group one batch does not name is NaN there)."""
    groups = dict.fromkeys(g for s in parts for g in s.right)
    return Scored(torch.cat([s.images for s in parts]), [p for s in parts for p in s.prompts],
                  {g: np.concatenate([s.right.get(g, np.full(len(s.prompts), np.nan)) for s in parts]) for g in groups})


@dataclass
class QualityReport:
    """Accuracy per prompt and overall, Fréchet distance to real images, and the images made."""

    rows: list[dict[str, float | str]]
    overall: dict[str, float]
    frechet: float
    images: torch.Tensor = field(repr=False)  # (N, 3, H, W) uint8 (32 px on the tiny model), n_per_prompt per prompt in order
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
    parts = [score_prompts(pipe, prompts[i : i + prompts_per_batch], n_per_prompt, seed, num_inference_steps,
                           guidance_scale, clf)
             for i in tqdm(range(0, len(prompts), prompts_per_batch), desc="evaluate prompts", leave=False)]
    scored = concat_scored(parts)
    fd = frechet_to_real(clf, scored.images, scored.prompts, seed)
    return QualityReport(scored.by_prompt(), scored.accuracy, fd, scored.images, scored.prompts)


def frechet_to_real(classifier: AttributeClassifier, images, prompts: Sequence[str], seed: int = 0) -> float:
    """Fréchet distance, in the judge's features, between images and as many real renders of their prompts' words."""
    words = sorted({w for p in set(prompts) for w in parse_prompt(p).values()})
    real = make_dataset(len(images), seed=seed + REAL_OFFSET, include=words)
    return frechet_distance(features(classifier, images), features(classifier, real.images))


def _feature_centre(model: AttributeClassifier) -> torch.Tensor:
    """The judge's mean feature over real images of every attribute, (96,); computed once per judge."""
    if model not in _centres:
        _centres[model] = features(model, make_dataset(JUDGE_CENTRE_N, seed=JUDGE_CENTRE_SEED).images).mean(0)
    return _centres[model]


def judge_vectors(model: AttributeClassifier, images) -> tuple[np.ndarray, np.ndarray]:
    """(valid, vectors): which images the judge accepts as one object, (n,) bool, and the judge features of
    all n centred on the mean of real images, (n, 96) float64; `judge_diversity` scores vectors[valid]."""
    if len(images) == 0:
        return np.zeros(0, dtype=bool), np.zeros((0, FEATURE_DIM))
    valid = (classify(model, images)["object"] >= OBJECT_THRESHOLD).numpy()
    return valid, (features(model, images) - _feature_centre(model)).double().numpy()


def judge_diversity(model: AttributeClassifier, images) -> tuple[float, int]:
    """(Vendi score in the judge's feature space over the images it accepts as one object, how many it accepts).

    Only valid objects count: noise and fragments are far apart in pixels, so counting them would
    reward garbage (pixel Vendi's failure on a half-trained adapter). The features are centred on real
    images' mean before the cosine kernel, so that what every object shares does not count as
    similarity. Scale: 16 photos of one object score 1.04; one object at 32 random places 2.4; 32 real
    images of every attribute 5.8. NaN when the judge accepts no image.
    """
    valid, vectors = judge_vectors(model, images)
    return (vendi_score(vectors[valid]) if valid.any() else float("nan")), int(valid.sum())
