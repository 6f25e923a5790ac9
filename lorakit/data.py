"""A procedural, captioned dataset of coloured shapes: every image has known attributes.

One object on a plain background, 32x32 RGB. Captions read like "a large red circle". Some
attribute values are *held out* of pre-training so that LoRA has something new to teach later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from torch.utils.data import Dataset

from lorakit.arguments import require_whole

IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, so edges are anti-aliased
BACKGROUND = (228, 228, 228)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 205, 35),
    "purple": (140, 55, 185),
    "orange": (245, 130, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
STYLES = ("solid", "striped")

# attribute group -> all of its values, in label-index order
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES,
    "size": SIZES,
    "style": STYLES,
}
# Concepts the base model never sees in pre-training: LoRA teaches them later.
HELD_OUT: dict[str, tuple[str, ...]] = {"colour": ("orange",), "shape": ("star",), "style": ("striped",)}
HELD_OUT_WORDS: tuple[str, ...] = tuple(w for ws in HELD_OUT.values() for w in ws)
# Rare tokens with no meaning in pre-training, for DreamBooth-style lessons ("a sks triangle").
RARE_TOKENS: tuple[str, ...] = ("sks", "zwx", "qrv")
# Every word a caption can contain; the tokenizer's vocabulary is built from this list.
ATTRIBUTE_WORDS: tuple[str, ...] = tuple(w for ws in ATTRIBUTES.values() for w in ws)  # every value, held-out ones too
CAPTION_WORDS: tuple[str, ...] = ("a",) + ATTRIBUTE_WORDS + RARE_TOKENS

_RADIUS = {"small": (5.0, 7.0), "large": (10.0, 12.5)}  # circumradius in pixels, by size
MAX_IMAGES = 200_000  # make_dataset's limit: 3 KiB of pixels per image, 0.6 GB at the limit
_BYTES_PER_IMAGE = 3 * IMAGE_SIZE * IMAGE_SIZE
_COLOUR_JITTER = 12  # +- per RGB channel, so samples of one colour are not all identical
_STRIPE_PERIOD = 4  # pixels; "striped" keeps every other pair of rows


@dataclass(frozen=True)
class Attributes:
    """The ground truth of one image: words for each attribute plus the object's centre in pixels."""

    colour: str
    shape: str
    size: str
    style: str = "solid"
    x: float = IMAGE_SIZE / 2
    y: float = IMAGE_SIZE / 2

    def label(self, group: str) -> int:
        """Index of this image's value in ATTRIBUTES[group] (the classifier's target)."""
        return ATTRIBUTES[group].index(getattr(self, group))


def caption_for(attrs: Attributes, with_size: bool = True, token: str | None = None) -> str:
    """Caption like "a large red striped circle" ("solid" is never written; size optional)."""
    words = ["a"]
    if token:
        words.append(token)
    if with_size:
        words.append(attrs.size)
    words.append(attrs.colour)
    if attrs.style != "solid":
        words.append(attrs.style)
    words.append(attrs.shape)
    return " ".join(words)


def parse_prompt(prompt: str) -> dict[str, str]:
    """The attribute words a prompt names, e.g. {"colour": "red", "shape": "circle"}."""
    found: dict[str, str] = {}
    for word in prompt.lower().replace(",", " ").split():
        for group, values in ATTRIBUTES.items():
            if word in values:
                found[group] = word
    return found


def unknown_words(prompt: str) -> list[str]:
    """Words of a prompt that never appear in the kit's captions (the model has not learnt them)."""
    return [w for w in prompt.lower().replace(",", " ").split() if w not in CAPTION_WORDS]


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices for polygon shapes (None for the circle), in supersampled pixel coordinates."""
    if shape == "square":
        h = r * 0.8  # half side: a square of circumradius r would look much bigger than the circle
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        angles = np.deg2rad([-90, 30, 150])
        cy = cy + r * 0.2  # centre the triangle's bounding box, not its centroid
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.5
            a = np.deg2rad(-90 + 36 * i)
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        return pts
    return None


def shape_mask(shape: str, x: float, y: float, radius: float) -> np.ndarray:
    """Anti-aliased coverage mask in [0, 1] of one shape centred at (x, y); (H, W) float32."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (IMAGE_SIZE * s, IMAGE_SIZE * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = x * s, y * s, radius * s
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def render(attrs: Attributes, radius: float | None = None, rgb: Sequence[int] | None = None) -> np.ndarray:
    """Draw one image from its attributes (default: mid-range radius, pure colour); (H, W, 3) uint8."""
    radius = float(np.mean(_RADIUS[attrs.size])) if radius is None else radius
    colour = np.asarray(COLOURS[attrs.colour] if rgb is None else rgb, dtype=np.float32)
    mask = shape_mask(attrs.shape, attrs.x, attrs.y, radius)  # (H, W)
    if attrs.style == "striped":
        rows = (np.arange(IMAGE_SIZE) // (_STRIPE_PERIOD // 2)) % 2 == 0
        mask = mask * rows[:, None]
    bg = np.asarray(BACKGROUND, dtype=np.float32)
    img = bg * (1 - mask[..., None]) + colour * mask[..., None]  # (H, W, 3)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _word_list(words: Iterable[str] | None, name: str) -> list[str]:
    if isinstance(words, str):
        raise TypeError(f"{name} must be a list of words, e.g. {name}=[{words!r}]; got the string {words!r}")
    return list(words or [])


def _allowed_values(include: Iterable[str] | None, exclude: Iterable[str] | None) -> dict[str, tuple[str, ...]]:
    """Per attribute group, the values a dataset may draw (see make_dataset)."""
    include, exclude = _word_list(include, "include"), _word_list(exclude, "exclude")
    valid = set(ATTRIBUTE_WORDS)
    bad = sorted(set(include + exclude) - valid)
    if bad:
        raise ValueError(
            f"unknown attribute word(s) {bad}; valid words are: "
            + "; ".join(f"{g}: {', '.join(v)}" for g, v in ATTRIBUTES.items())
        )
    allowed = {}
    for group, values in ATTRIBUTES.items():
        chosen = [v for v in values if v in include]
        if not chosen:  # group not mentioned in include: the pre-training values
            chosen = [v for v in values if v not in HELD_OUT.get(group, ())]
        chosen = [v for v in chosen if v not in exclude]
        if not chosen:
            raise ValueError(f"include/exclude leave no {group} to draw; keep at least one of {list(values)}")
        allowed[group] = tuple(chosen)
    return allowed


def sample_attributes(rng: np.random.Generator, allowed: dict[str, tuple[str, ...]]) -> tuple[Attributes, float]:
    """Draw attributes and a radius; the position varies freely but keeps the object inside."""
    colour, shape, size, style = (str(rng.choice(allowed[g])) for g in ("colour", "shape", "size", "style"))
    lo, hi = _RADIUS[size]
    radius = float(rng.uniform(lo, hi))
    margin = radius + 1.0
    x, y = (float(v) for v in rng.uniform(margin, IMAGE_SIZE - margin, size=2))
    return Attributes(colour, shape, size, style, x, y), radius


@dataclass
class ShapesDataset(Dataset):
    """Images, captions and attribute labels; indexing gives (image tensor in [-1, 1], caption)."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    captions: list[str]
    attributes: list[Attributes]

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return to_model_range(self.images[i]), self.captions[i]

    def labels(self, group: str) -> torch.Tensor:
        """Class indices of one attribute group for every image; (N,) long."""
        return torch.tensor([a.label(group) for a in self.attributes], dtype=torch.long)

    def positions(self) -> torch.Tensor:
        """Object centres in [0, 1] image coordinates; (N, 2) float."""
        return torch.tensor([[a.x, a.y] for a in self.attributes], dtype=torch.float32) / IMAGE_SIZE


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] to float in [-1, 1], the range diffusion models use."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] back to uint8 in [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _check_unit_range(lo: float, hi: float) -> None:
    """Float images must be in [0, 1]; values well outside mean another range (e.g. the model's [-1, 1])."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("the images contain NaN or inf values; they cannot be shown or scored")
    if lo < -0.05 or hi > 1.05:
        hint = (" They look like model-range images in [-1, 1]: convert them with lorakit.data.to_uint8(images)."
                if lo >= -1.05 and hi <= 1.05 else " Pixel values in [0, 255] should be a uint8 tensor or array.")
        raise ValueError(f"float images must be in [0, 1], these range from {lo:.3g} to {hi:.3g}.{hint}")


def as_uint8(images) -> torch.Tensor:
    """Any image batch the kit meets -> uint8 tensor (B, 3, H, W).

    Accepts uint8 tensors (B, 3, H, W); float tensors (B, 3, H, W) in [0, 1] (diffusers'
    ``output_type="pt"``); numpy arrays (B, H, W, 3), uint8 or float in [0, 1] (``output_type="np"``);
    a list of PIL images; or a ShapesDataset.
    """
    if isinstance(images, ShapesDataset):
        return images.images
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], Image.Image):
        images = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"numpy images must be (B, H, W, 3), got shape {images.shape}")
        if images.dtype != np.uint8:
            _check_unit_range(float(images.min()), float(images.max()))
        arr = images if images.dtype == np.uint8 else np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensors must be (B, 3, H, W), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            return images.cpu()
        if not images.is_floating_point():
            raise ValueError(f"integer images must be uint8 (0..255), got {images.dtype}; convert with "
                             ".to(torch.uint8), or pass floats in [0, 1]")
        if images.numel():
            _check_unit_range(float(images.min()), float(images.max()))
        return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    raise TypeError(f"cannot read images of type {type(images).__name__}; pass a tensor, numpy array or list of PIL images")


def resize_images(images, size: int) -> torch.Tensor:
    """uint8 (B, 3, size, size): nearest neighbour up (the kit's shapes drawn for a larger model, edges kept crisp),
    area averaging down (a larger model's images brought to the judge's 32 px)."""
    require_whole("size", size)
    x = as_uint8(images)  # (B, 3, H, W)
    if x.shape[-2:] == (size, size):
        return x
    if x.shape[-2] != x.shape[-1]:
        raise ValueError(f"the kit resizes square images only, got {x.shape[-2]}x{x.shape[-1]}")
    mode = "nearest-exact" if size > x.shape[-1] else "area"
    return torch.nn.functional.interpolate(x.float(), size=(size, size), mode=mode).round().clamp(0, 255).to(torch.uint8)


def at_kit_size(images) -> torch.Tensor:
    """Images at the kit's 32 px, uint8 (B, 3, 32, 32): what the judge and the pixel metrics read, whatever the model."""
    return resize_images(images, IMAGE_SIZE)


def make_dataset(
    n: int,
    seed: int = 0,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    size_word_prob: float = 0.75,
) -> ShapesDataset:
    """Draw n captioned images. Same arguments give identical bytes.

    By default only pre-training concepts appear (HELD_OUT_WORDS never do). ``include`` names
    values to draw from in each group it mentions (held-out ones allowed): ``include=["orange"]``
    gives orange shapes of every pre-training shape and size. ``exclude`` removes values.
    The size word is written in a caption with probability ``size_word_prob``, so a model also
    learns the spread of sizes for prompts that do not name one.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
        raise ValueError(f"n must be a positive integer number of images, got {n!r}")
    if n > MAX_IMAGES:
        raise ValueError(f"n={n:,} images would need {n * _BYTES_PER_IMAGE / 1e9:.1f} GB of memory "
                         f"({_BYTES_PER_IMAGE // 1024} KiB each); the limit is {MAX_IMAGES:,} "
                         f"({MAX_IMAGES * _BYTES_PER_IMAGE / 1e9:.1f} GB). Draw fewer, or several datasets with other seeds")
    require_whole("seed", seed, minimum=0)
    if not 0.0 <= size_word_prob <= 1.0:
        raise ValueError(f"size_word_prob is a probability in [0, 1], got {size_word_prob}")
    allowed = _allowed_values(include, exclude)
    rng = np.random.default_rng(seed)
    images, captions, attributes = [], [], []
    for _ in range(n):
        attrs, radius = sample_attributes(rng, allowed)
        rgb = np.asarray(COLOURS[attrs.colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3)
        images.append(render(attrs, radius, rgb))
        captions.append(caption_for(attrs, with_size=bool(rng.random() < size_word_prob)))
        attributes.append(attrs)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return ShapesDataset(pixels, captions, attributes)


def concat_datasets(*datasets: ShapesDataset) -> ShapesDataset:
    """One dataset holding the images of several, in order (e.g. a new concept plus base images)."""
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    return ShapesDataset(
        torch.cat([d.images for d in datasets]),
        [c for d in datasets for c in d.captions],
        [a for d in datasets for a in d.attributes],
    )


def augmented(data: ShapesDataset, max_shift: int = 8, shift_step: int = 4, flip: bool = True) -> ShapesDataset:
    """Every view of every image under horizontal flips and shifts; captions kept, positions updated.

    Shifts run over -max_shift..max_shift pixels in `shift_step` steps on both axes, filling the
    uncovered border with the background (the usual "random flip + random crop/translate" of
    DreamBooth scripts, enumerated instead of drawn, so a seed still fixes every batch). A shift that
    would cut the object at the border is skipped. Defaults: up to 2 flips x 5 x 5 shifts = 50 views
    per image.
    """
    if max_shift < 0 or shift_step < 1:
        raise ValueError(f"need max_shift >= 0 and shift_step >= 1, got {max_shift} and {shift_step}")
    shifts = range(-max_shift, max_shift + 1, shift_step)
    bg = torch.tensor(BACKGROUND, dtype=torch.uint8)[:, None, None]  # (3, 1, 1)
    images, captions, attributes = [], [], []
    for img, caption, attrs in zip(data.images, data.captions, data.attributes):
        for flipped in (False, True) if flip else (False,):
            base = img.flip(-1) if flipped else img  # (3, H, W)
            x0 = IMAGE_SIZE - attrs.x if flipped else attrs.x
            margin = _RADIUS[attrs.size][1] + 1.0  # as make_dataset keeps objects whole
            for dy in shifts:
                for dx in shifts:
                    if not all(margin <= v <= IMAGE_SIZE - margin for v in (x0 + dx, attrs.y + dy)):
                        continue
                    out = bg.expand_as(base).clone()
                    src = base[:, max(0, -dy) : IMAGE_SIZE - max(0, dy), max(0, -dx) : IMAGE_SIZE - max(0, dx)]
                    out[:, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
                    images.append(out)
                    captions.append(caption)
                    attributes.append(replace(attrs, x=x0 + dx, y=attrs.y + dy))
    return ShapesDataset(torch.stack(images), captions, attributes)


def few_shot_instance(
    n: int = 5,
    token: str = "sks",
    colour: str = "purple",
    shape: str = "triangle",
    size: str = "small",
    position: tuple[float, float] = (10.0, 11.0),
    seed: int = 0,
) -> ShapesDataset:
    """N photos of one specific object for DreamBooth-style lessons, captioned "a sks triangle".

    Colour, shape, size and position are fixed; like repeated photos of one object, each image
    differs only by a pixel of jitter in position and a little in shade.
    """
    if not isinstance(n, (int, np.integer)) or n <= 0 or n > MAX_IMAGES:
        raise ValueError(f"n must be a number of images from 1 to {MAX_IMAGES:,}, got {n!r}")
    if token not in RARE_TOKENS:
        raise ValueError(f"token {token!r} is not one of the tokenizer's rare tokens {list(RARE_TOKENS)}")
    _allowed_values([colour, shape, size], None)  # validates the words
    radius = float(np.mean(_RADIUS[size]))
    lo, hi = radius + 2.0, IMAGE_SIZE - radius - 2.0  # the object, with its 1-pixel jitter, stays whole
    if len(position) != 2 or not all(lo <= float(v) <= hi for v in position):
        raise ValueError(f"position {tuple(position)} would put a {size} {shape} (radius {radius:.1f} px) partly or "
                         f"wholly outside the {IMAGE_SIZE}x{IMAGE_SIZE} image; give x and y in [{lo:.1f}, {hi:.1f}] pixels")
    rng = np.random.default_rng(seed)
    images, captions, attributes = [], [], []
    for _ in range(n):
        dx, dy = rng.uniform(-1.0, 1.0, size=2)
        attrs = Attributes(colour, shape, size, "solid", position[0] + dx, position[1] + dy)
        rgb = np.asarray(COLOURS[colour]) + rng.integers(-4, 5, size=3)
        images.append(render(attrs, radius, rgb))
        captions.append(f"a {token} {shape}")
        attributes.append(attrs)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return ShapesDataset(pixels, captions, attributes)


def pretraining_prompts(with_size: bool = True) -> list[str]:
    """Every "a {size} {colour} {shape}" prompt of the pre-training distribution."""
    allowed = _allowed_values(None, None)
    sizes = allowed["size"] if with_size else ("",)
    return [
        " ".join(w for w in ("a", s, c, sh) if w)
        for s in sizes
        for c in allowed["colour"]
        for sh in allowed["shape"]
    ]


def no_object_images(n: int, seed: int = 0) -> torch.Tensor:
    """Images that show no single object, uint8 (n, 3, 32, 32): what the judge learns to answer "no object" on.

    Four kinds in turn, each in a palette colour: stripes or a blotch over (nearly) the whole frame,
    broken up; three or more scattered fragments; a large rendered object cut into 8-pixel patches and
    shuffled; and the bare background with faint blotches. Generated images fail in these ways when a
    model collapses or an eraser overshoots.
    """
    require_whole("n", n)
    rng = np.random.default_rng(seed)
    bg = np.asarray(BACKGROUND, np.float32)
    names = list(COLOURS)
    large = make_dataset(n, seed=seed + 1, include=[w for w in ATTRIBUTE_WORDS if w != "small"]).images
    large = large.permute(0, 2, 3, 1).numpy().astype(np.float32)  # (n, H, W, 3)
    size, patch = IMAGE_SIZE, 8
    out = []
    for i in range(n):
        kind = i % 4
        colour = np.asarray(COLOURS[names[rng.integers(len(names))]], np.float32) + rng.integers(
            -_COLOUR_JITTER, _COLOUR_JITTER + 1, 3)
        if kind == 2:  # a large object cut into patches and shuffled
            tiles = [large[i, y : y + patch, x : x + patch] for y in range(0, size, patch) for x in range(0, size, patch)]
            order, per_row = rng.permutation(len(tiles)), size // patch
            out.append(np.concatenate([np.concatenate([tiles[order[r * per_row + c]] for c in range(per_row)], 1)
                                       for r in range(per_row)], 0))
            continue
        if kind == 0:  # stripes or a blotch over (nearly) the whole frame, with holes
            top, left = rng.integers(0, 3, 2)
            bottom, right = size - rng.integers(0, 3, 2)
            mask = np.zeros((size, size), np.float32)
            mask[top:bottom, left:right] = 1
            if rng.random() < 0.7:
                mask *= ((np.arange(size) // (_STRIPE_PERIOD // 2)) % 2 == 0)[:, None]
            holes = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3)
            mask *= holes > np.quantile(holes, rng.uniform(0.2, 0.5))
        elif kind == 1:  # at least three pieces, none an object on its own
            while True:
                field = ndimage.gaussian_filter(rng.normal(size=(size, size)), rng.uniform(1.0, 2.5))
                mask = (field > np.quantile(field, rng.uniform(0.75, 0.93))).astype(np.float32)
                if ndimage.label(mask)[1] >= 3:
                    break
        else:  # the background with faint blotches
            field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2)
            mask = np.clip(field / field.std() * 0.08, 0, 0.3)
        mask = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(0.3, 0.8))
        out.append(bg * (1 - mask[..., None]) + colour * mask[..., None])
    images = np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def oversized_images(n: int, seed: int = 0) -> torch.Tensor:
    """Objects drawn larger than make_dataset's largest (radius 12.5-16 pixels), uint8 (n, 3, 32, 32).

    A model asked for "a large square" sometimes draws it this big; it is still one object, and the
    judge's object network learns that from these.
    """
    require_whole("n", n)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    out = []
    for _ in range(n):
        radius = float(rng.uniform(12.5, 16.0))
        lo, hi = min(radius + 1.0, IMAGE_SIZE / 2), max(IMAGE_SIZE - radius - 1.0, IMAGE_SIZE / 2)
        x, y = (float(v) for v in rng.uniform(lo, hi, size=2))
        colour = names[rng.integers(len(names))]
        attrs = Attributes(colour, SHAPES[rng.integers(len(SHAPES))], "large", STYLES[rng.integers(len(STYLES))], x, y)
        rgb = np.clip(np.asarray(COLOURS[colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, size=3), 0, 255)
        out.append(render(attrs, radius=radius, rgb=rgb))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def warped_images(n: int, seed: int = 0) -> torch.Tensor:
    """Objects bent by a smooth random displacement (1-3 pixels), half of them faded, uint8 (n, 3, 32, 32).

    Generated objects often come out like this: sides pinched or bulging, corners rounded, and after an
    eraser or a negative slider scale, paler than any render (up to halfway to the background). Each is
    still one object, and the judge's object network learns that from these. Half are also drawn
    larger than any render, as `oversized_images` are.
    """
    require_whole("n", n)
    rng = np.random.default_rng(seed)
    images = torch.cat([make_dataset(n - n // 2, seed=seed + 1, include=ATTRIBUTE_WORDS).images,
                        oversized_images(n // 2, seed=seed + 2)]).permute(0, 2, 3, 1).numpy().astype(np.float32)  # (n, H, W, 3)
    grid = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)  # (2, H, W): rows, columns
    bg = np.asarray(BACKGROUND, np.float32)
    out = []
    for i in rng.permutation(n):
        field = ndimage.gaussian_filter(rng.normal(size=(2, IMAGE_SIZE, IMAGE_SIZE)), (0, 4, 4))  # (2, H, W)
        field *= rng.uniform(1.0, 3.0) / np.abs(field).max()
        img = np.stack([ndimage.map_coordinates(images[i, ..., c], grid + field, order=1, mode="nearest")
                        for c in range(3)], -1)
        fade = rng.uniform(0.0, 0.5) if rng.random() < 0.5 else 0.0
        out.append(img * (1 - fade) + bg * fade)
    return torch.from_numpy(np.clip(np.rint(np.stack(out)), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
