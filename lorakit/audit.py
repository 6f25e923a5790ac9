"""The judge audited: the attribute classifier against the pixel rules on the images it judges.

Every "the model learnt X" in the course is the classifier's reading of generated images. Here it is
compared, image by image, with `lorakit.pixels` (hue, stripe periodicity, fill ratio, corners,
extent) on generated images from the situations the notebooks judge: base prompts, each shipped
LoRA, and blends of the two along t (notebooks 04 and 07 audit their checkpoints, sliders and
erasers the same way with `audit_judge`). Where the two disagree, the images are shown so a person
can tell which judge is wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from lorakit.classifier import AttributeClassifier, load_classifier, predict_words
from lorakit.adapters import load_adapter
from lorakit.concepts import adapter_path
from lorakit.data import ATTRIBUTES, HELD_OUT, as_uint8
from lorakit.merge import Mixer
from lorakit.metrics import bootstrap_ci
from lorakit.pipeline import generate
from lorakit.pixels import pixel_words

AGREEMENT_BAR = 0.95  # the judge is trusted on an attribute when it agrees with the pixel rules this often
BLEND_TS = (0.25, 0.5, 0.75)
BLEND_PROMPT = "a large orange striped circle"


@dataclass(frozen=True)
class Disagreement:
    """One attribute of one image on which the judge and the pixel rules differ."""

    situation: str
    index: int
    attribute: str
    judge: str
    pixels: str | None  # None: the pixel rules found no object


@dataclass
class JudgeAudit:
    """Agreement of the classifier with the pixel rules, per attribute, overall and by situation."""

    counts: dict[str, int]  # situation -> images
    agreement: dict[str, float]  # attribute -> share of all images on which both judges agree
    ci: dict[str, tuple[float, float]]  # attribute -> 95% bootstrap interval of that share (over images)
    by_situation: dict[str, dict[str, float]]  # situation -> attribute -> agreement
    disagreements: list[Disagreement] = field(default_factory=list)
    images: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def passes(self, bar: float = AGREEMENT_BAR) -> dict[str, bool]:
        """Per attribute: does the agreement reach the bar?"""
        return {g: a >= bar for g, a in self.agreement.items()}

    def rows(self) -> list[dict[str, object]]:
        """One row per situation plus an "all" row: images and agreement per attribute (for printing)."""
        rows = [{"situation": s, "images": self.counts[s], **self.by_situation[s]} for s in self.counts]
        return rows + [{"situation": "all", "images": sum(self.counts.values()), **self.agreement}]

    def report(self) -> str:
        """The audit as text: agreement per situation and attribute, each attribute against the bar, and
        the disagreements counted by kind (situation, attribute, the classifier's word / the pixel rules')."""
        width = max(len(s) for s in [*self.counts, "situation"]) + 1
        lines = [f"{'situation':{width}s} {'images':>6s} " + " ".join(f"{g:>7s}" for g in ATTRIBUTES)]
        lines += [f"{r['situation']:{width}s} {r['images']:6d} " + " ".join(f"{r[g]:7.1%}" for g in ATTRIBUTES)
                  for r in self.rows()]
        for g, ok in self.passes().items():
            lo, hi = self.ci[g]
            lines.append(f"{g:7s} agreement {self.agreement[g]:.1%} (95% CI {lo:.1%}-{hi:.1%}): "
                         f"{'meets' if ok else 'BELOW'} the {AGREEMENT_BAR:.0%} bar")
        kinds = Counter((d.situation, d.attribute, f"{d.judge} / {d.pixels}") for d in self.disagreements)
        lines.append(f"{len(self.disagreements)} disagreements (image x attribute) in {sum(self.counts.values())} "
                     "images; by situation, attribute and words (classifier / pixel rules):")
        lines += [f"  {n:4d}  {s:{width}s} {g:7s} {words}" for (s, g, words), n in kinds.most_common(12)]
        return "\n".join(lines)

    def disagreement_images(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """The first n disagreements as images (uint8 (n, 3, 32, 32)) with titles naming both judges' words."""
        shown = self.disagreements[:n]
        if not shown:
            return torch.zeros(0, 3, 32, 32, dtype=torch.uint8), []
        return (torch.stack([self.images[d.situation][d.index] for d in shown]),
                [f"{d.situation}\n{d.attribute}: clf {d.judge}\npx {d.pixels}" for d in shown])

    def summary(self) -> dict[str, object]:
        """JSON-ready numbers: agreement, interval and verdict against the bar per attribute."""
        return {"images": sum(self.counts.values()), "bar": AGREEMENT_BAR,
                "agreement": {g: round(a, 4) for g, a in self.agreement.items()},
                "ci": {g: [round(lo, 4), round(hi, 4)] for g, (lo, hi) in self.ci.items()},
                "by_situation": {s: {g: round(a, 4) for g, a in v.items()} for s, v in self.by_situation.items()}}


def audit_judge(situations: dict[str, torch.Tensor], classifier: AttributeClassifier | None = None) -> JudgeAudit:
    """Compare the classifier with the pixel rules on every image of every situation (name -> uint8 images)."""
    if not situations:
        raise ValueError("audit_judge needs at least one situation: a dict name -> generated images")
    classifier = classifier if classifier is not None else load_classifier()
    agree: dict[str, list[float]] = {g: [] for g in ATTRIBUTES}
    by_situation, counts, disagreements, kept = {}, {}, [], {}
    for name, images in situations.items():
        images = as_uint8(images)
        if len(images) == 0:
            raise ValueError(f"situation {name!r} has no images")
        judge, pixels = predict_words(classifier, images), pixel_words(images)
        by_situation[name] = {}
        for g in ATTRIBUTES:
            same = [float(j[g] == p[g]) for j, p in zip(judge, pixels)]
            agree[g] += same
            by_situation[name][g] = float(np.mean(same))
            disagreements += [Disagreement(name, i, g, judge[i][g], pixels[i][g]) for i, s in enumerate(same) if not s]
        counts[name], kept[name] = len(images), images
    return JudgeAudit(counts, {g: float(np.mean(v)) for g, v in agree.items()},
                      {g: bootstrap_ci(v) for g, v in agree.items()}, by_situation, disagreements, kept)


def audit_situations(pipe: StableDiffusionPipeline, n_per_prompt: int = 4, n_blend: int = 16, seed: int = 0,
                     steps: int = 10) -> dict[str, torch.Tensor]:
    """Generated images of the situations notebooks 01-05 judge, by name (uint8 (B, 3, 32, 32) each).

    "base": every pre-training prompt; "orange LoRA" / "striped LoRA": the shipped adapters on prompts
    naming their concept; "weight t=..." / "factor t=...": the two adapters mixed (notebook 05).
    The pipeline's adapters are unloaded again at the end.
    """
    colours = [c for c in ATTRIBUTES["colour"] if c not in HELD_OUT["colour"]]
    shapes = [s for s in ATTRIBUTES["shape"] if s not in HELD_OUT["shape"]]
    base_prompts = [f"a {size} {c} {s}" for c in colours for s in shapes for size in ATTRIBUTES["size"]]
    out = {"base": generate(pipe, base_prompts, seed=seed, n_per_prompt=n_per_prompt, num_inference_steps=steps)}
    load_adapter(pipe, adapter_path("orange"), "orange")
    load_adapter(pipe, adapter_path("striped"), "striped")
    try:
        mixer = Mixer(pipe, "orange", "striped")
        mixer.apply_single("orange", 1.0)
        orange_prompts = [f"a {size} orange {s}" for s in shapes for size in ATTRIBUTES["size"]]
        out["orange LoRA"] = generate(pipe, orange_prompts, seed=seed + 1, n_per_prompt=n_per_prompt,
                                      num_inference_steps=steps)
        mixer.apply_single("striped", 1.0)
        striped_prompts = [f"a {size} {c} striped {s}" for c in colours[:3] for s in shapes for size in ATTRIBUTES["size"]]
        out["striped LoRA"] = generate(pipe, striped_prompts, seed=seed + 2, n_per_prompt=max(1, n_per_prompt // 2),
                                       num_inference_steps=steps)
        for method in ("weight", "factor"):
            for t in BLEND_TS:
                mixer.apply(method, t)
                out[f"{method} t={t:g}"] = generate(pipe, BLEND_PROMPT, seed=seed + 3, n_per_prompt=n_blend,
                                                    num_inference_steps=steps)
        mixer.restore()
    finally:
        pipe.unload_lora_weights()
    return out
