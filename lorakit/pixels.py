"""A second judge made of pixel rules: what an image shows, read off its pixels with no training.

The attribute classifier judges every generated image in the course; these rules check it. Each
reads one property of the object (the pixels that differ from the border's background colour):

- colour: the hue of the object's mean colour, named by the nearest palette hue;
- style: stripe periodicity, the strength of a 4-row period in how far each row of the object
  stands out from the background (a striped object alternates two rows on, two rows off; a solid
  one is even);
- shape: the object's silhouette (its contrast, stripes filled, resampled to a 12 x 12 grid over its
  bounding box) named by the majority of its nearest rendered silhouettes; a silhouette farther from
  every rendered one than any of several hundred held-out renders lies from its nearest is no
  recognisable shape (None: a blob, a fragment, a smear);
- size: the bounding box's longer side, against the midpoint between the two sizes of that shape.

Rules are calibrated once on rendered images and their round trips through the pipeline's VAE
(`calibration`), never on generated ones. Generated images are decoded by that VAE, which rounds
corners and blurs small stars into blobs: hand-made shape features (fill ratio, convex-hull fill,
solidity, corner coverage) read 87% of such round trips right when fitted on clean renders and 91%
when fitted on round trips too; the nearest rendered silhouettes read about 98%.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from dataclasses import dataclass, field, replace
import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from lorakit.data import ATTRIBUTE_WORDS, ATTRIBUTES, COLOURS, at_kit_size, make_dataset
from lorakit.paths import PIPELINE_DIR, RUNS_DIR, atomic_path, json_text
from lorakit.pipeline import load_pipeline, vae_round_trip
from lorakit.seeds import PIXEL_CALIBRATION_SEED

OBJECT_DISTANCE = 50  # a pixel belongs to the object when a channel differs from the background by more
CORE_DISTANCE = 100  # pixels this far from the background give the object's colour (edges are mixed)
_STRIPE_PERIOD = 4  # rows, as lorakit.data draws stripes
_GRID = 12  # side of the silhouette grid
_NEIGHBOURS = 5  # rendered silhouettes that vote on a shape


def _period_strength(profile: np.ndarray, period: int) -> float:
    """Amplitude of the `period`-row cycle in a row profile, relative to its mean (0: no such cycle)."""
    if len(profile) < period or profile.mean() <= 0:
        return 0.0
    rows = np.arange(len(profile))
    cycle = np.exp(-2j * np.pi * rows / period)
    return float(2 * abs((profile * cycle).mean()) / profile.mean())


def hue_degrees(rgb) -> float:
    """HSV hue of one RGB colour (0-255 values) in degrees, 0 = red."""
    r, g, b = (float(v) / 255.0 for v in rgb)
    return colorsys.rgb_to_hsv(min(max(r, 0.0), 1.0), min(max(g, 0.0), 1.0), min(max(b, 0.0), 1.0))[0] * 360.0


PALETTE_HUES = {name: hue_degrees(rgb) for name, rgb in COLOURS.items()}


def nearest_colour(hue: float) -> str:
    """The palette colour whose hue is closest on the colour wheel."""
    return min(PALETTE_HUES, key=lambda name: min(abs(hue - PALETTE_HUES[name]), 360 - abs(hue - PALETTE_HUES[name])))


def object_hues(images: torch.Tensor) -> torch.Tensor:
    """Hue in degrees of each image's object colour (mean of the pixels far from the border's colour); (B,).

    images: float (B, 3, H, W) in [-1, 1] or uint8. An image with no such pixel gets NaN.
    """
    x = images.float() if images.dtype == torch.uint8 else (images.float() + 1) * 127.5  # (B, 3, H, W) in 0..255
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # (B, 3, 4W)
    background = border.median(dim=-1).values[..., None, None]  # (B, 3, 1, 1)
    core = ((x - background).abs().amax(1, keepdim=True) > CORE_DISTANCE).float()  # (B, 1, H, W)
    rgb = (x * core).sum((2, 3)) / core.sum((2, 3)).clamp(min=1) / 255  # (B, 3)
    top, low = rgb.amax(1), rgb.amin(1)
    span = (top - low).clamp(min=1e-6)
    r, g, b = rgb.unbind(1)
    hue = torch.where(top == r, ((g - b) / span) % 6, torch.where(top == g, (b - r) / span + 2, (r - g) / span + 4)) * 60
    return torch.where(core.sum((1, 2, 3)) > 0, hue, torch.full_like(hue, float("nan")))


@dataclass(frozen=True)
class PixelMeasures:
    """What the pixel rules read from one image (None of these for an image with no object)."""

    hue: float  # degrees, of the object's mean colour
    stripes: float  # strength of the 4-row period in the object's row profile, 0 (even) to about 1
    extent: int  # pixels, the bounding box's longer side
    silhouette: np.ndarray = field(compare=False, repr=False)  # (145,): 12 x 12 contrast grid, then log(height / width)


def _silhouette(distance: np.ndarray, outline: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The object's contrast over its box (plus a pixel), stripes filled, on a 12 x 12 grid: 1 at or above
    the object's median contrast (a faded interior still reads as inside), falling to 0 off the object."""
    top, bottom, left, right = box
    filled = ndimage.maximum_filter(distance, size=(_STRIPE_PERIOD - 1, 1))  # (H, W): a stripe's gap takes its rows' value
    soft = np.clip(filled / np.median(filled[outline]), 0, 1)
    crop = torch.from_numpy(soft[max(top - 1, 0) : bottom + 1, max(left - 1, 0) : right + 1].astype(np.float32))
    grid = F.interpolate(crop[None, None], size=(_GRID, _GRID), mode="bilinear", align_corners=False)[0, 0]
    return np.concatenate([grid.flatten().numpy(), [np.log((bottom - top) / (right - left))]])


def measure(image: torch.Tensor) -> PixelMeasures | None:
    """Pixel measures of one uint8 image (3, H, W); None when no object stands out from the background."""
    x = image.permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    distance = np.abs(x - np.median(border, axis=0)).max(-1)  # (H, W)
    mask = distance > OBJECT_DISTANCE
    # Close the gaps between stripes (vertically only), keep the largest piece: the object's outline.
    outline = ndimage.binary_closing(np.pad(mask, 3), structure=np.ones((5, 1)))[3:-3, 3:-3] | mask
    pieces, n = ndimage.label(outline)
    if n == 0:
        return None
    sizes = ndimage.sum(outline, pieces, range(1, n + 1))
    outline = ndimage.binary_fill_holes(pieces == 1 + int(np.argmax(sizes)))
    mask &= outline
    ys, xs = np.nonzero(outline)
    if len(ys) < 4:
        return None
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = bottom - top, right - left
    inside = outline[top:bottom]
    profile = (distance[top:bottom] * inside).sum(1) / np.maximum(inside.sum(1), 1)  # (h,) mean contrast per row
    core = mask & (distance > CORE_DISTANCE)
    colour = x[core if core.sum() >= 3 else mask].mean(0)
    return PixelMeasures(hue=hue_degrees(colour), stripes=_period_strength(profile, _STRIPE_PERIOD),
                         extent=int(max(h, w)), silhouette=_silhouette(distance, outline, (top, bottom, left, right)))


@dataclass(frozen=True)
class Calibration:
    """Rendered silhouettes with their shapes, and the thresholds for style and size, from rendered images."""

    silhouettes: np.ndarray = field(repr=False)  # (N, 145) rendered images' silhouettes, clean and through the VAE
    shapes: tuple[str, ...] = field(repr=False)  # (N,) their shapes
    stripe_threshold: float  # stripe strength just above the most periodic solid render
    readable_distance: float  # the farthest a held-out render (clean or decoded) lies from its nearest silhouette
    size_threshold: dict[str, float]  # shape -> extent in pixels between its small and large renders
    accuracy: dict[str, float]  # the rules' accuracy per attribute on other rendered images (no shape: wrong)
    accuracy_decoded: dict[str, float]  # ... and on those images' round trips through the VAE
    rejected: float  # share of those renders and round trips read as no recognisable shape


def _decide(m: PixelMeasures | None, cal: Calibration) -> dict[str, str | None]:
    if m is None:
        return {g: None for g in ATTRIBUTES}
    words = {"colour": nearest_colour(m.hue), "shape": None, "size": None,
             "style": "striped" if m.stripes > cal.stripe_threshold else "solid"}
    distances = np.sqrt(((cal.silhouettes - m.silhouette) ** 2).sum(1))  # (N,)
    nearest = np.argsort(distances)[:_NEIGHBOURS]  # closest first
    if distances[nearest[0]] <= cal.readable_distance:
        shape = Counter(cal.shapes[i] for i in nearest).most_common(1)[0][0]  # a tie goes to the closest
        words |= {"shape": shape, "size": "large" if m.extent > cal.size_threshold[shape] else "small"}
    return words


def _nearest_distance(m: PixelMeasures, silhouettes: np.ndarray) -> float:
    return float(np.sqrt(((silhouettes - m.silhouette) ** 2).sum(1).min()))


def _accuracy(measures: list[PixelMeasures], truth: list, cal: Calibration) -> dict[str, float]:
    words = [_decide(m, cal) for m in measures]
    return {g: float(np.mean([w[g] == getattr(a, g) for w, a in zip(words, truth)])) for g in ATTRIBUTES}


def _cache_file(n: int, seed: int) -> Path:
    """Where a calibration is kept between processes: named by everything it depends on (the shipped
    VAE's weights, the code of the rules and of the renders, n and seed), so a change makes a new one."""
    h = hashlib.sha256(f"{n} {seed}".encode())
    for part in (PIPELINE_DIR / "vae" / "diffusion_pytorch_model.safetensors", Path(__file__),
                 Path(__file__).with_name("data.py")):
        h.update(part.read_bytes())
    return RUNS_DIR / "cache" / f"pixel-calibration-{h.hexdigest()[:16]}.npz"


def _save(cal: Calibration, path: Path) -> None:
    numbers = {k: getattr(cal, k) for k in ("stripe_threshold", "readable_distance", "size_threshold", "accuracy",
                                            "accuracy_decoded", "rejected")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, silhouettes=cal.silhouettes, shapes=np.array(cal.shapes), numbers=json_text(numbers))


def _load(path: Path) -> Calibration | None:
    try:
        with np.load(path) as z:
            numbers = json.loads(str(z["numbers"]))
            return Calibration(z["silhouettes"], tuple(str(s) for s in z["shapes"]), **numbers)
    except Exception:  # a truncated or foreign file: calibrate again
        return None


@lru_cache(maxsize=1)
def calibration(n: int = 1600, seed: int = PIXEL_CALIBRATION_SEED) -> Calibration:
    """Fit the rules on n rendered images and their VAE round trips; set the no-shape distance on n // 2
    others and test everything on n // 2 more (about 40 s, then kept in runs/cache/ for later processes)."""
    path = _cache_file(n, seed)
    cal = _load(path) if path.is_file() else None
    if cal is None:
        cal = _calibrate(n, seed)
        _save(cal, path)
    return cal


def _calibrate(n: int, seed: int) -> Calibration:
    """The work of `calibration`, uncached."""
    vae = load_pipeline(PIPELINE_DIR).vae  # the tiny model's round trips, whatever LORAKIT_BASE says
    fit, bound, held = (make_dataset(k, seed=seed + i, include=ATTRIBUTE_WORDS) for i, k in enumerate((n, n // 2, n // 2)))

    def measured(data) -> tuple[list[PixelMeasures], list[PixelMeasures]]:
        clean, decoded = [measure(img) for img in data.images], [measure(img) for img in vae_round_trip(data.images, vae)]
        if None in clean or None in decoded:
            raise RuntimeError("a rendered image shows no object to the pixel rules: check OBJECT_DISTANCE against "
                               "lorakit.data's colours and background")
        return clean, decoded

    measures, attributes = [m for part in measured(fit) for m in part], fit.attributes * 2  # clean, then decoded
    stripes = {s: [m.stripes for m, a in zip(measures, attributes) if a.style == s] for s in ATTRIBUTES["style"]}
    # just above the most periodic solid render: generated stripes are often fainter than rendered ones
    stripe_threshold = max(stripes["solid"]) + 0.1 * (min(stripes["striped"]) - max(stripes["solid"]))
    extents: dict[tuple[str, str], list[int]] = {}
    for m, a in zip(measures, attributes):
        extents.setdefault((a.shape, a.size), []).append(m.extent)
    thresholds = {s: (max(extents[(s, "small")]) + min(extents[(s, "large")])) / 2 for s in ATTRIBUTES["shape"]}
    silhouettes = np.stack([m.silhouette for m in measures])  # (2n, 145)
    readable = max(_nearest_distance(m, silhouettes) for part in measured(bound) for m in part)
    cal = Calibration(silhouettes, tuple(a.shape for a in attributes), stripe_threshold, readable, thresholds, {}, {}, 0.0)
    clean, decoded = measured(held)
    rejected = float(np.mean([_nearest_distance(m, silhouettes) > readable for m in clean + decoded]))
    return replace(cal, accuracy=_accuracy(clean, held.attributes, cal),
                   accuracy_decoded=_accuracy(decoded, held.attributes, cal), rejected=rejected)


def pixel_words(images) -> list[dict[str, str | None]]:
    """The pixel rules' reading of each image as words, e.g. {"colour": "orange", "shape": "circle", ...}.

    An image in which no object stands out gets None for every attribute; an object of no recognisable
    shape (farther from every rendered silhouette than any of the held-out renders) gets None for shape and size.
    The rules are calibrated at 32 px: a larger model's images are area-averaged down first.
    """
    cal = calibration()
    return [_decide(measure(img), cal) for img in at_kit_size(images)]
