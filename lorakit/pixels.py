"""A second judge made of pixel rules: what an image shows, read off its pixels with no training.

The attribute classifier judges every generated image in the course; these rules check it. Each
reads one property of the object (the pixels that differ from the border's background colour):

- colour: the hue of the object's mean colour, named by the nearest palette hue;
- style: stripe periodicity, the strength of a 4-row period in how far each row of the object
  stands out from the background (a striped object alternates two rows on, two rows off; a solid
  one is even);
- shape: how much of its bounding box the object fills, and its convex hull fills (the hull follows
  the outline's points, so a square or triangle drawn with pinched sides keeps its hull), solidity
  (area over convex-hull area) and how much of the box's four corners the object covers, compared
  with the same measures on rendered shapes;
- size: the bounding box's longer side, against the midpoint between the two sizes of that shape.

Rules are calibrated once on rendered images (`calibration`), never on generated ones.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import ConvexHull

from lorakit.data import ATTRIBUTE_WORDS, ATTRIBUTES, COLOURS, as_uint8, make_dataset

OBJECT_DISTANCE = 50  # a pixel belongs to the object when a channel differs from the background by more
CORE_DISTANCE = 100  # pixels this far from the background give the object's colour (edges are mixed)
_SHAPE_FEATURES = ("fill", "hull_fill", "solidity", "corners")  # weighed alike, each in units of its spread
_STRIPE_PERIOD = 4  # rows, as lorakit.data draws stripes


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
    fill: float  # object area / bounding-box area
    hull_fill: float  # convex-hull area / bounding-box area (triangle 0.5, star 0.69, circle 0.79, square 1)
    solidity: float  # object area / convex-hull area
    corners: float  # mean coverage of the box's four corner squares (side: a quarter of the shorter side)
    extent: int  # pixels, the bounding box's longer side

    def shape_vector(self) -> np.ndarray:
        """(fill, hull fill, solidity, corners), the features shapes are told apart by."""
        return np.array([getattr(self, f) for f in _SHAPE_FEATURES])


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
    area = float(outline.sum())
    pixel_corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(float)
    hull_area = ConvexHull(pixel_corners).volume if min(h, w) > 1 else area
    box = outline[top:bottom, left:right].astype(np.float32)
    k = max(1, round(min(h, w) / 4))
    corners = float(np.mean([box[:k, :k].mean(), box[:k, -k:].mean(), box[-k:, :k].mean(), box[-k:, -k:].mean()]))
    inside = outline[top:bottom]
    profile = (distance[top:bottom] * inside).sum(1) / np.maximum(inside.sum(1), 1)  # (h,) mean contrast per row
    core = mask & (distance > CORE_DISTANCE)
    colour = x[core if core.sum() >= 3 else mask].mean(0)
    return PixelMeasures(hue=hue_degrees(colour), stripes=_period_strength(profile, _STRIPE_PERIOD), fill=area / (h * w),
                         hull_fill=hull_area / ((h + 1) * (w + 1)),
                         solidity=area / hull_area, corners=corners, extent=int(max(h, w)))


@dataclass(frozen=True)
class Calibration:
    """Shape prototypes and size thresholds measured on rendered images."""

    prototypes: dict[tuple[str, str], np.ndarray]  # (style, shape) -> mean (fill, solidity, corners)
    stripe_threshold: float  # stripe strength just above the most periodic solid render
    spread: np.ndarray  # (4,) standard deviation of each shape feature, to weigh them alike
    size_threshold: dict[str, float]  # shape -> extent in pixels between its small and large renders
    accuracy: dict[str, float]  # the rules' accuracy per attribute on other rendered images


def _decide(m: PixelMeasures | None, cal: Calibration) -> dict[str, str | None]:
    if m is None:
        return {g: None for g in ATTRIBUTES}
    style = "striped" if m.stripes > cal.stripe_threshold else "solid"
    distances = {s: float((((m.shape_vector() - cal.prototypes[(style, s)]) / cal.spread) ** 2).sum())
                 for s in ATTRIBUTES["shape"]}
    shape = min(distances, key=distances.get)
    size = "large" if m.extent > cal.size_threshold[shape] else "small"
    return {"colour": nearest_colour(m.hue), "shape": shape, "size": size, "style": style}


@lru_cache(maxsize=1)
def calibration(n: int = 1600, seed: int = 90_210) -> Calibration:
    """Fit the shape prototypes and size thresholds on n rendered images, test them on n others."""
    fit = make_dataset(n, seed=seed, include=ATTRIBUTE_WORDS)
    held = make_dataset(n, seed=seed + 1, include=ATTRIBUTE_WORDS)
    measures = [measure(img) for img in fit.images]
    stripes = {s: [m.stripes for m, a in zip(measures, fit.attributes) if a.style == s] for s in ATTRIBUTES["style"]}
    # just above the most periodic solid render: generated stripes are often fainter than rendered ones
    stripe_threshold = max(stripes["solid"]) + 0.1 * (min(stripes["striped"]) - max(stripes["solid"]))
    vectors: dict[tuple[str, str], list[np.ndarray]] = {}
    extents: dict[tuple[str, str], list[int]] = {}
    for m, a in zip(measures, fit.attributes):
        vectors.setdefault((a.style, a.shape), []).append(m.shape_vector())
        extents.setdefault((a.shape, a.size), []).append(m.extent)
    spread = np.std(np.concatenate([np.stack(v) for v in vectors.values()]), axis=0)
    thresholds = {s: (max(extents[(s, "small")]) + min(extents[(s, "large")])) / 2 for s in ATTRIBUTES["shape"]}
    cal = Calibration({k: np.mean(v, axis=0) for k, v in vectors.items()}, stripe_threshold, spread, thresholds, {})
    guesses = [_decide(measure(img), cal) for img in held.images]
    accuracy = {g: float(np.mean([w[g] == getattr(a, g) for w, a in zip(guesses, held.attributes)])) for g in ATTRIBUTES}
    return Calibration(cal.prototypes, stripe_threshold, spread, thresholds, accuracy)


def pixel_words(images) -> list[dict[str, str | None]]:
    """The pixel rules' reading of each image as words, e.g. {"colour": "orange", "shape": "circle", ...}.

    An image in which no object stands out gets None for every attribute.
    """
    cal = calibration()
    return [_decide(measure(img), cal) for img in as_uint8(images)]
