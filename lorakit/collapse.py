"""Measuring mode collapse of a DreamBooth-style adapter on its four faces: fidelity, diversity, editability,
drift; and memorisation.

One `CollapseProbe` fixes what is measured (prompts, seeds, reference images) so that every
checkpoint, seed and mitigation is scored on exactly the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from lorakit.classifier import AttributeClassifier, classify, features, load_classifier
from lorakit.data import IMAGE_SIZE, ShapesDataset, make_dataset
from lorakit.evaluation import judge_diversity, score_images
from lorakit.metrics import (
    attribute_accuracy,
    image_vendi,
    nearest_train_distance,
    position_spread,
    precision_recall_density_coverage,
)
from lorakit.pipeline import DEFAULT_STEPS, generate, generate_groups
from lorakit.seeds import EVAL_SEED, PROBE_OFFSETS, PROBE_REAL_SEED

METRICS = {  # name: what it measures (and which way is good)
    "fidelity": "share of token-prompt samples that are the instance (colour, shape, size): higher is better",
    "diversity": "Vendi score of the token-prompt samples the judge accepts as one object, in its feature space "
                 "(1 = one object): higher is more varied",
    "valid": "share of token-prompt samples the judge accepts as one object",
    "pixel_vendi": "Vendi score of the token-prompt samples in pixel space, every sample counted (1 = one image)",
    "position_px": "RMS spread of the object's position over token-prompt samples, in pixels",
    "nn_distance": "mean RMS pixel distance to the nearest training image (0 = a copy)",
    "coverage": "share of real instance-class images (anywhere on the canvas) with a sample nearby",
    "editability": "share of edited token prompts (e.g. 'a red sks triangle') drawn as asked",
    "class_accuracy": "share of class prompts without the token ('a red triangle') drawn right: drift lowers it",
    "class_as_instance": "share of plain 'a triangle' samples drawn as the instance (10% by chance): drift raises it",
}


@dataclass
class CollapseProbe:
    """The prompts, seeds and reference images every measurement uses."""

    instance: ShapesDataset  # the few training images
    token: str = "sks"
    colour: str = "purple"
    shape: str = "triangle"
    size: str = "small"
    n: int = 16  # samples per prompt group
    seed: int = EVAL_SEED
    sample_steps: int = DEFAULT_STEPS
    classifier: AttributeClassifier = field(default_factory=load_classifier, repr=False)

    def __post_init__(self) -> None:
        self.token_prompt = f"a {self.token} {self.shape}"
        self.identity = f"a {self.size} {self.colour} {self.shape}"  # what the token should mean
        others = [c for c in ("red", "green", "blue", "yellow") if c != self.colour]
        self.edit_prompts = [f"a large {self.token} {self.shape}"] + [f"a {c} {self.token} {self.shape}" for c in others[:3]]
        self.class_prompts = [f"a {c} {self.shape}" for c in others[:3]] + [f"a large {self.shape}"]
        self.class_prompt = f"a {self.shape}"
        # the real class of the instance: the same object anywhere on the canvas
        real = make_dataset(64, seed=PROBE_REAL_SEED, include=[self.colour, self.shape, self.size])
        self._real_feats = features(self.classifier, real.images)

    def _group(self, group: str, n_per_prompt: int | None, seed_offset: int) -> tuple[list[str] | str, int, int]:
        """(prompts, first seed, images per prompt) of one prompt group."""
        prompts = {"token": self.token_prompt, "edit": self.edit_prompts, "class": self.class_prompts,
                   "plain": self.class_prompt}[group]
        seed = self.seed + seed_offset + (PROBE_OFFSETS[group] if group != "token" else 0)
        return prompts, seed, n_per_prompt or (self.n // 4 if group == "class" else self.n)

    def group_samples(self, pipe: StableDiffusionPipeline, group: str, n_per_prompt: int | None = None,
                      seed_offset: int = 0, **kwargs) -> torch.Tensor:
        """Samples of one prompt group ("token", "edit", "class" or "plain"), uint8 (B, 3, H, W).

        n_per_prompt defaults to the probe's: n per prompt, but n // 4 for the four class prompts (a
        diagnostic no verdict uses). Image i of a group always comes from the same seed, so a smaller
        n gives the first images of a larger one.
        """
        prompts, seed, n = self._group(group, n_per_prompt, seed_offset)
        return generate(pipe, prompts, seed=seed, n_per_prompt=n, num_inference_steps=self.sample_steps, **kwargs)

    def samples(self, pipe: StableDiffusionPipeline, seed_offset: int = 0, **kwargs) -> dict[str, object]:
        """The probe's images, made in one batch: token prompt, edited token prompts, class prompts, plain class prompt."""
        groups = ("token", "edit", "class", "plain")
        images = generate_groups(pipe, [self._group(g, None, seed_offset) for g in groups],
                                 num_inference_steps=self.sample_steps, **kwargs)
        return dict(zip(groups, images))

    def token_scores(self, token: torch.Tensor) -> dict[str, float]:
        """What the token prompt's samples alone tell: fidelity, diversity (judge and pixels), distance to the training images."""
        diversity, n_valid = judge_diversity(self.classifier, token)
        return {"fidelity": attribute_accuracy(token, self.identity, self.classifier)["all"],
                "diversity": diversity, "valid": n_valid / len(token), "pixel_vendi": image_vendi(token),
                "nn_distance": float(nearest_train_distance(token, self.instance.images).mean())}

    def score(self, images: dict[str, object]) -> dict[str, float]:
        """Every metric in METRICS from the images `samples` made."""
        clf = self.classifier
        token = images["token"]
        prdc = precision_recall_density_coverage(self._real_feats, features(clf, token), k=3)
        plain_words = attribute_accuracy(images["plain"], self.identity, clf)
        scores = {
            **self.token_scores(token),
            "position_px": position_spread(classify(clf, token)["position"].numpy() * IMAGE_SIZE),
            "coverage": prdc["coverage"],
            "editability": score_images(images["edit"], self.edit_prompts, len(images["edit"]) // len(self.edit_prompts),
                                        clf).accuracy["all"],
            "class_accuracy": score_images(images["class"], self.class_prompts,
                                           len(images["class"]) // len(self.class_prompts), clf).accuracy["all"],
            "class_as_instance": plain_words["all"],
        }
        return {name: scores[name] for name in METRICS}

    def measure(self, pipe: StableDiffusionPipeline, seed_offset: int = 0, **kwargs) -> dict[str, float]:
        """Generate and score in one call (kwargs go to the pipeline, e.g. cross_attention_kwargs)."""
        return self.score(self.samples(pipe, seed_offset, **kwargs))
