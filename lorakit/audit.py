"""The judge audited: the attribute classifier against the pixel rules on the images it judges.

Every "the model learnt X" in the course is the classifier's reading of generated images. Here it is
compared, image by image, with `lorakit.pixels` (hue, stripe periodicity, nearest rendered silhouettes,
extent) on generated images from the situations the notebooks judge: base prompts, each shipped
LoRA, and blends of the two along t (notebooks 04 and 07 audit their checkpoints, sliders and
erasers the same way with `audit_judge`). Where the two disagree, the images are shown so a person
can tell which judge is wrong.

Agreement is reported twice. On readable images: where the pixel rules can read the attribute (an
image with no object has no colour to read, a blob unlike any rendered shape no shape or size). And on
all images, where "no shape" is an answer like any other: the judge's object network reads no shape
and no size where it sees no single object, and it agrees with the pixel rules only if they, too,
read no recognisable shape. The images with no recognisable shape are counted per situation and
shown apart, titled with the judge's reading, so a person can see what they are.
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
from lorakit.metrics import proportion_ci
from lorakit.pipeline import DEFAULT_STEPS, generate
from lorakit.pixels import pixel_words

AGREEMENT_BAR = 0.95  # the judge is trusted on an attribute when its agreement with the pixel rules (95% CI) reaches this
BLEND_TS = (0.25, 0.5, 0.75)
BLEND_PROMPT = "a large orange striped circle"


def _images(n: int) -> str:
    """'1 image', '4 images'."""
    return f"{n} image" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class Disagreement:
    """One attribute of one image on which the judge and the pixel rules differ."""

    situation: str
    index: int
    attribute: str
    judge: str | None  # None: the judge sees no single object
    pixels: str  # the pixel rules' word


@dataclass
class JudgeAudit:
    """Agreement of the classifier with the pixel rules, per attribute, overall and by situation."""

    counts: dict[str, int]  # situation -> images
    agreement: dict[str, float]  # attribute -> share of the readable images on which both judges agree
    ci: dict[str, tuple[float, float]]  # attribute -> 95% interval of that share (Wilson, over images)
    agreement_all: dict[str, float]  # attribute -> share of all images, an unreadable one counted as disagreeing
    ci_all: dict[str, tuple[float, float]]
    by_situation: dict[str, dict[str, float]]  # situation -> attribute -> agreement (NaN: nothing readable)
    unreadable: dict[str, list[int]]  # situation -> images with no object or no recognisable shape
    no_object: dict[str, list[int]]  # situation -> images in which the judge sees no single object
    disagreements: list[Disagreement] = field(default_factory=list)
    images: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    classifier: AttributeClassifier | None = field(default=None, repr=False)

    def standing(self, bar: float = AGREEMENT_BAR, readable_only: bool = True) -> dict[str, str]:
        """Per attribute, the agreement's 95% interval (on readable images, or on all) against the bar: "meets"
        (wholly at or above it), "below" (wholly below) or "inconclusive" (the interval contains the bar)."""
        cis = self.ci if readable_only else self.ci_all
        return {g: "meets" if lo >= bar else "below" if hi < bar else "inconclusive" for g, (lo, hi) in cis.items()}

    def rows(self) -> list[dict[str, object]]:
        """One row per situation plus an "all" row: images, unreadable images and agreement per attribute."""
        rows = [{"situation": s, "images": self.counts[s], "unreadable": len(self.unreadable[s]),
                 "no_object": len(self.no_object[s]), **self.by_situation[s]} for s in self.counts]
        return rows + [{"situation": "all", "images": sum(self.counts.values()),
                        "unreadable": sum(len(v) for v in self.unreadable.values()),
                        "no_object": sum(len(v) for v in self.no_object.values()), **self.agreement}]

    def report(self) -> str:
        """The audit as text: agreement per situation and attribute, each attribute against the bar, and
        the disagreements counted by kind (situation, attribute, the classifier's word / the pixel rules')."""
        width = max(len(s) for s in [*self.counts, "situation"]) + 1
        lines = [f"{'situation':{width}s} {'images':>6s} {'no shape':>8s} {'no object':>9s} "
                 + " ".join(f"{g:>7s}" for g in ATTRIBUTES)]
        lines += [f"{r['situation']:{width}s} {r['images']:6d} {r['unreadable']:8d} {r['no_object']:9d} "
                  + " ".join(f"{r[g]:7.1%}" if r[g] == r[g] else f"{'-':>7s}" for g in ATTRIBUTES) for r in self.rows()]
        verdict = {"meets": "meets", "below": "BELOW", "inconclusive": "inconclusive against"}
        for g in ATTRIBUTES:
            (lo, hi), (lo_all, hi_all) = self.ci[g], self.ci_all[g]
            lines.append(f"{g:7s} agreement {self.agreement[g]:.1%} on readable images (95% CI {lo:.1%}-{hi:.1%}): "
                         f"{verdict[self.standing()[g]]} the {AGREEMENT_BAR:.0%} bar; on all images {self.agreement_all[g]:.1%} "
                         f"({lo_all:.1%}-{hi_all:.1%}): {verdict[self.standing(readable_only=False)[g]]} it")
        both = sum(len(set(self.unreadable[s]) & set(self.no_object[s])) for s in self.counts)
        unreadable, no_object = (sum(len(v) for v in d.values()) for d in (self.unreadable, self.no_object))
        lines.append(f"no shape (pixel rules): {_images(unreadable)} with no object or a blob unlike any rendered shape; "
                     f"no object (judge): {_images(no_object)}; both: {both}")
        kinds = Counter((d.situation, d.attribute, f"{d.judge or 'no object'} / {d.pixels}") for d in self.disagreements)
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
                [f"{d.situation}\n{d.attribute}: clf {d.judge or 'no object'}\npx {d.pixels}" for d in shown])

    def unreadable_images(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """The first n images with no recognisable shape (uint8 (n, 3, 32, 32)), titled with the judge's shape."""
        shown = [(s, i) for s, idx in self.unreadable.items() for i in idx][:n]
        if not shown:
            return torch.zeros(0, 3, 32, 32, dtype=torch.uint8), []
        images = torch.stack([self.images[s][i] for s, i in shown])
        words = predict_words(self.classifier if self.classifier is not None else load_classifier(), images)
        return images, [f"{s}\nclf {w['shape'] or 'no object'}" for (s, _), w in zip(shown, words)]

    def summary(self) -> dict[str, object]:
        """JSON-ready numbers: agreement, interval and verdict against the bar per attribute."""
        return {"images": sum(self.counts.values()), "bar": AGREEMENT_BAR,
                "unreadable": {s: len(v) for s, v in self.unreadable.items()},
                "no_object": {s: len(v) for s, v in self.no_object.items()},
                "agreement": {g: round(a, 4) for g, a in self.agreement.items()},
                "ci": {g: [round(lo, 4), round(hi, 4)] for g, (lo, hi) in self.ci.items()},
                "agreement_all": {g: round(a, 4) for g, a in self.agreement_all.items()},
                "ci_all": {g: [round(lo, 4), round(hi, 4)] for g, (lo, hi) in self.ci_all.items()},
                "standing": self.standing(), "standing_all": self.standing(readable_only=False),
                "by_situation": {s: {g: None if a != a else round(a, 4) for g, a in v.items()}
                                 for s, v in self.by_situation.items()}}


def audit_judge(situations: dict[str, torch.Tensor], classifier: AttributeClassifier | None = None) -> JudgeAudit:
    """Compare the classifier with the pixel rules on every image of every situation (name -> uint8 images)."""
    if not situations:
        raise ValueError("audit_judge needs at least one situation: a dict name -> generated images")
    classifier = classifier if classifier is not None else load_classifier()
    agree: dict[str, list[float]] = {g: [] for g in ATTRIBUTES}
    agree_all: dict[str, list[float]] = {g: [] for g in ATTRIBUTES}  # unreadable: 0
    by_situation, counts, unreadable, no_object, disagreements, kept = {}, {}, {}, {}, [], {}
    for name, images in situations.items():
        images = as_uint8(images)
        if len(images) == 0:
            raise ValueError(f"situation {name!r} has no images")
        judge, pixels = predict_words(classifier, images), pixel_words(images)
        by_situation[name] = {}
        for g in ATTRIBUTES:
            readable = [i for i, p in enumerate(pixels) if p[g] is not None]
            same = [float(judge[i][g] == pixels[i][g]) for i in readable]
            agree[g] += same
            agree_all[g] += [float(judge[i][g] == p[g]) for i, p in enumerate(pixels)]
            by_situation[name][g] = float(np.mean(same)) if same else float("nan")
            disagreements += [Disagreement(name, i, g, judge[i][g], pixels[i][g]) for i, s in zip(readable, same) if not s]
        counts[name], kept[name] = len(images), images
        unreadable[name] = [i for i, p in enumerate(pixels) if p["shape"] is None]
        no_object[name] = [i for i, j in enumerate(judge) if j["shape"] is None]
    if not agree["shape"]:
        raise ValueError("no image shows a recognisable shape: there is nothing to audit the judge on")
    return JudgeAudit(counts, {g: float(np.mean(v)) for g, v in agree.items()},
                      {g: proportion_ci(v) for g, v in agree.items()}, {g: float(np.mean(v)) for g, v in agree_all.items()},
                      {g: proportion_ci(v) for g, v in agree_all.items()}, by_situation, unreadable, no_object, disagreements,
                      kept, classifier)


def audit_situations(pipe: StableDiffusionPipeline, n_per_prompt: int = 4, n_blend: int = 16, seed: int = 0,
                     steps: int = DEFAULT_STEPS) -> dict[str, torch.Tensor]:
    """Generated images of the situations notebooks 01-05 judge, by name (uint8 (B, 3, H, W) each).

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
