"""What a mix of two adapters draws along a path t in [0, 1], measured at fixed seeds, with a cache.

`BlendStudy` generates images for (method, t, seed, strength) once and keeps them, so a widget
redraw is a dictionary lookup; `path` scores a whole path: each concept's classifier probability,
image quality (the share the judge accepts as one object, its confidence), smoothness (the largest
feature jump between neighbouring t) and diversity (Vendi in the judge's feature space over valid
objects, and in pixels for comparison).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from lorakit.classifier import ATTRIBUTES, OBJECT_THRESHOLD, AttributeClassifier, classify, features, load_classifier
from lorakit.evaluation import judge_diversity
from lorakit.merge import Mixer
from lorakit.metrics import image_vendi
from lorakit.pipeline import DEFAULT_STEPS, generate

DEFAULT_TS = tuple(float(t) for t in np.round(np.linspace(0, 1, 11), 2))


@dataclass
class PathResult:
    """Measures along one path; lists follow `ts`."""

    method: str
    ts: list[float]
    p_a: list[float] = field(default_factory=list)  # mean classifier probability of concept a
    p_b: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)  # share of samples the judge accepts as one object
    confidence: list[float] = field(default_factory=list)  # mean top probability over attribute groups
    diversity: list[float] = field(default_factory=list)  # Vendi in the judge's feature space, valid objects only
    pixel_vendi: list[float] = field(default_factory=list)  # Vendi in pixels (counts fragments and noise too)
    jumps: list[float] = field(default_factory=list)  # mean feature distance between t_i and t_i+1, same seeds
    mix_ms: float = 0.0  # mean time to set the pipeline to one mix (ΔW computed and written, or set_adapters)

    @property
    def max_jump(self) -> float:
        """The roughest step of the path: the largest neighbouring feature jump."""
        return max(self.jumps) if self.jumps else 0.0


def concept_of(word: str) -> tuple[str, str]:
    """(attribute group, value) of a concept word, e.g. "striped" -> ("style", "striped")."""
    groups = [g for g, values in ATTRIBUTES.items() if word in values]
    if not groups:
        raise ValueError(f"{word!r} is not an attribute word; choose from {sorted(v for vs in ATTRIBUTES.values() for v in vs)}")
    return groups[0], word


class BlendStudy:
    """Cached generations and measures for mixes of a Mixer's two adapters on one prompt."""

    def __init__(self, mixer: Mixer, prompt: str, concept_a: str, concept_b: str, n: int = 16, seed: int = 0,
                 sample_steps: int = DEFAULT_STEPS, classifier: AttributeClassifier | None = None) -> None:
        self.mixer, self.prompt, self.n, self.seed, self.sample_steps = mixer, prompt, n, seed, sample_steps
        self.concepts = (concept_of(concept_a), concept_of(concept_b))
        self.classifier = classifier if classifier is not None else load_classifier()
        self.cache: dict[tuple, torch.Tensor] = {}
        self.paths: dict[tuple[str, tuple[float, ...]], PathResult] = {}
        self.mix_seconds: list[float] = []

    def images(self, method: str, t: float, seed: int | None = None, strength: float = 1.0,
               n: int | None = None) -> torch.Tensor:
        """uint8 (n, 3, H, W) samples of the prompt for one mix (32 px on the tiny model); generated once, then cached."""
        seed = self.seed if seed is None else seed
        n = n or self.n
        key = (method, round(float(t), 4), seed, round(float(strength), 4), n)
        if key not in self.cache:
            start = time.perf_counter()
            self.mixer.apply(method, t, strength)
            self.mix_seconds.append(time.perf_counter() - start)
            self.cache[key] = generate(self.mixer.pipe, self.prompt, seed=seed, n_per_prompt=n,
                                       num_inference_steps=self.sample_steps)
        return self.cache[key]

    def single_images(self, adapter: str, scale: float, seed: int | None = None, n: int | None = None) -> torch.Tensor:
        """Samples with one adapter alone at `scale` (extrapolation when outside [0, 1]); cached."""
        seed = self.seed if seed is None else seed
        n = n or self.n
        key = ("single", adapter, round(float(scale), 4), seed, n)
        if key not in self.cache:
            self.mixer.apply_single(adapter, scale)
            self.cache[key] = generate(self.mixer.pipe, self.prompt, seed=seed, n_per_prompt=n,
                                       num_inference_steps=self.sample_steps)
        return self.cache[key]

    def probabilities(self, images: torch.Tensor) -> tuple[float, float]:
        """Mean classifier probability of concept a and of concept b over the images."""
        probs = classify(self.classifier, images)
        return tuple(float(probs[g][:, ATTRIBUTES[g].index(v)].mean()) for g, v in self.concepts)  # type: ignore[return-value]

    def quality(self, images: torch.Tensor) -> tuple[float, float]:
        """(share the judge accepts as one object, mean top-1 probability over colour/shape/size/style)."""
        probs = classify(self.classifier, images)
        confidence = float(np.mean([probs[g].max(dim=1).values.mean() for g in ATTRIBUTES]))
        return float((probs["object"] >= OBJECT_THRESHOLD).float().mean()), confidence

    def path(self, method: str, ts: Sequence[float] = DEFAULT_TS) -> PathResult:
        """Every measure along t for one method at the study's seeds (cached)."""
        key = (method, tuple(ts))
        if key in self.paths:
            return self.paths[key]
        result = PathResult(method, list(ts))
        start_count = len(self.mix_seconds)
        feats = []
        for t in ts:
            images = self.images(method, t)
            p_a, p_b = self.probabilities(images)
            valid, confidence = self.quality(images)
            result.p_a.append(p_a)
            result.p_b.append(p_b)
            result.valid.append(valid)
            result.confidence.append(confidence)
            result.diversity.append(judge_diversity(self.classifier, images)[0])
            result.pixel_vendi.append(image_vendi(images))
            feats.append(features(self.classifier, images))
        result.jumps = [float((b - a).norm(dim=1).mean()) for a, b in zip(feats, feats[1:])]
        timed = self.mix_seconds[start_count:]
        result.mix_ms = 1000 * float(np.mean(timed)) if timed else 0.0
        self.paths[key] = result
        return result
