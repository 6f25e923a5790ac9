"""The attribute classifier: the yardstick every notebook measures generated images with.

A small CNN with one head per attribute group (colour, shape, size, style) and a regression head
for the object's position, plus a second small CNN that answers "is there one object at all?": a
collapsed model's smears, an eraser's leftovers and an empty canvas have no shape or size to read,
and the judge says so instead of naming the nearest shape. Trained on the procedural dataset, held-out concepts included, and
shipped as safetensors in data/. Its penultimate layer gives the features that distribution metrics
(Fréchet distance, Vendi, precision/recall) are computed in.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lorakit.arguments import require_whole
from lorakit.data import (
    ATTRIBUTE_WORDS,
    ATTRIBUTES,
    COLOURS,
    ShapesDataset,
    as_uint8,
    at_kit_size,
    concat_datasets,
    make_dataset,
    no_object_images,
    oversized_images,
    warped_images,
)
from lorakit.devices import device as pick_device
from lorakit.paths import CLASSIFIER_PATH, PIPELINE_DIR, atomic_path, check_output_file
from lorakit.pipeline import load_pipeline, vae_round_trip
from lorakit.pixels import nearest_colour, object_hues
from lorakit.seeds import seeded

FEATURE_DIM = 96
_REBUILD_HINT = "rebuild it with `python -m lorakit train-classifier` (about 3 minutes on a laptop CPU)"


OBJECT_THRESHOLD = 0.5  # P(one object) below this: the judge reads no shape and no size


class AttributeClassifier(nn.Module):
    """CNN on 32x32 RGB: logits per attribute group, a position guess, 96-d features, and an object logit."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64))  # (B, 64, 4, 4)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.heads = nn.ModuleDict({g: nn.Linear(FEATURE_DIM, len(v)) for g, v in ATTRIBUTES.items()})
        self.position = nn.Linear(FEATURE_DIM, 2)
        # its own body, so that learning "no object" leaves the attribute features as they were
        self.object = nn.Sequential(block(3, 16), block(16, 32), block(32, 32), nn.Flatten(),
                                    nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features of images in [-1, 1]; (B, 3, H, W) -> (B, 96)."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute group, (B, n_values) each, "position" (B, 2) in [0, 1] and "object" (B,) logits."""
        h = self.features(x)
        out = {g: head(h) for g, head in self.heads.items()}
        out["position"] = self.position(h)
        out["object"] = self.object(x)[:, 0]
        return out


def _prepare(images, dev: torch.device) -> torch.Tensor:
    """Any image batch the kit handles -> float (B, 3, H, W) in [-1, 1] on dev."""
    return as_uint8(images).to(dev).float() / 127.5 - 1.0


def load_classifier(path: str | Path | None = None, device: str | torch.device | None = None) -> AttributeClassifier:
    """Load the shipped classifier (data/classifier.safetensors) in eval mode."""
    path = Path(path) if path is not None else CLASSIFIER_PATH
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights not found at {path}; {_REBUILD_HINT}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"classifier file {path} is corrupted or not a safetensors file ({err}); {_REBUILD_HINT}") from err
    model = AttributeClassifier()
    try:
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise ValueError(f"classifier file {path} does not match the kit's classifier ({err}); {_REBUILD_HINT}") from err
    return model.to(pick_device(device)).eval()


@torch.no_grad()
def classify(model: AttributeClassifier, images, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Probabilities per attribute group (B, n_values), "position" (B, 2) and P(one object) "object" (B,), on the CPU.

    The judge reads 32 px images: a larger model's images are area-averaged down first (`lorakit.data.at_kit_size`).
    """
    dev = next(model.parameters()).device
    x = as_uint8(images)  # (B, 3, H, W)
    parts: dict[str, list[torch.Tensor]] = {}
    how = {"position": lambda v: v, "object": torch.sigmoid}
    for i in range(0, len(x), batch_size):
        out = model(_prepare(at_kit_size(x[i : i + batch_size]), dev))  # (b, 3, 32, 32) in
        for k, v in out.items():
            parts.setdefault(k, []).append(how.get(k, lambda v: v.softmax(-1))(v).cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def predict_words(model: AttributeClassifier, images) -> list[dict[str, str]]:
    """The classifier's guess for each image as words, e.g. {"colour": "red", "shape": "circle", ...}.

    Where the judge sees no single object (P(object) < OBJECT_THRESHOLD), shape and size are None.
    """
    probs = classify(model, images)
    idx = {g: probs[g].argmax(-1).tolist() for g in ATTRIBUTES}
    seen = (probs["object"] >= OBJECT_THRESHOLD).tolist()
    return [{g: ATTRIBUTES[g][idx[g][i]] if seen[i] or g in ("colour", "style") else None for g in ATTRIBUTES}
            for i in range(len(seen))]


@torch.no_grad()
def features(model: AttributeClassifier, images, batch_size: int = 256) -> torch.Tensor:
    """Penultimate-layer features of an image batch; (B, 96) on the CPU (arguments in `classify`'s order)."""
    dev = next(model.parameters()).device
    x = as_uint8(images)  # (B, 3, H, W): brought to 32 px a batch at a time
    return torch.cat([model.features(_prepare(at_kit_size(x[i : i + batch_size]), dev)).cpu()
                      for i in range(0, len(x), batch_size)])


def accuracy_table(model: AttributeClassifier, data: ShapesDataset) -> dict[str, float]:
    """Accuracy per attribute group on a labelled dataset, the share seen as an object, and the mean absolute
    position error (pixels)."""
    probs = classify(model, data.images)
    table = {g: (probs[g].argmax(-1) == data.labels(g)).float().mean().item() for g in ATTRIBUTES}
    table["object"] = (probs["object"] >= OBJECT_THRESHOLD).float().mean().item()
    table["position_mae_px"] = ((probs["position"] - data.positions()).abs().mean() * data.images.shape[-1]).item()
    return table


def _is_classifier_file(path: Path) -> bool:
    """True for a safetensors file holding exactly the classifier's weights (what save_classifier writes)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys()) == set(AttributeClassifier().state_dict())
    except Exception:  # not safetensors at all
        return False


_MAX_HUE_TURN = 40.0  # degrees; colour augmentation turns hues by up to this much, then relabels
_MAX_BLUR = 1.0  # pixels, the largest Gaussian blur sigma of the augmentation


def _hue_turn(theta: torch.Tensor) -> torch.Tensor:
    """Rotations of RGB space about the grey axis by theta (B,) radians: (B, 3, 3); greys stay grey."""
    u = torch.full((3,), 3 ** -0.5)
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    return c * torch.eye(3) + s * cross + (1 - c) * torch.outer(u, u)


def _colour_augment(x: torch.Tensor, colour: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn each image's hue by a random angle and scale its saturation; relabel by the nearest palette hue.

    x: (B, 3, H, W) in [-1, 1]; colour: (B,) labels. The new label is the palette colour nearest to the
    turned object's hue (`lorakit.pixels.object_hues`), so the classifier learns the colour words'
    boundaries as the pixel rules define them; images whose hue cannot be read keep their label.
    """
    b = len(x)
    theta = torch.deg2rad((torch.rand(b, generator=gen) * 2 - 1) * _MAX_HUE_TURN)
    grey = x.mean(1, keepdim=True)  # (B, 1, H, W)
    chroma = 0.7 + 0.45 * torch.rand(b, 1, 1, 1, generator=gen)
    turned = torch.einsum("bij,bjhw->bihw", _hue_turn(theta), x)
    turned = (grey + chroma * (turned - grey)).clamp(-1, 1)
    names = list(COLOURS)
    hues = object_hues(turned).tolist()
    labels = torch.tensor([c if h != h else names.index(nearest_colour(h)) for c, h in zip(colour.tolist(), hues)])
    return turned, labels


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, 3, H, W) with one sigma (pixels), 5x5 kernel, borders replicated."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 5, 5).to(x.device)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)


def _blur_and_noise(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A batch (B, 3, H, W) blurred by a random sigma (skipped below 0.2 px) plus noise of a random strength per
    image: robustness to the softness and small artefacts of generated images."""
    sigma = float(torch.rand((), generator=gen)) * _MAX_BLUR
    if sigma > 0.2:
        x = _blur(x, sigma)
    return x + torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(len(x), 1, 1, 1, generator=gen)


@torch.no_grad()
def _judge_training_set(n_train: int, seed: int, round_trips: int, vae: torch.nn.Module | None) -> ShapesDataset:
    """Rendered images of every attribute, plus `round_trips` of them through the pipeline's VAE."""
    train = make_dataset(n_train, seed=seed + 1, include=ATTRIBUTE_WORDS)
    if vae is None or round_trips == 0:
        return train
    rt = ShapesDataset(vae_round_trip(train.images[:round_trips], vae), train.captions[:round_trips],
                       train.attributes[:round_trips])
    return concat_datasets(train, rt)


def train_classifier(
    out: str | Path | None = None,
    n_train: int = 24_000,
    steps: int = 1_500,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    vae: torch.nn.Module | None = None,
    object_steps: int = 1_200,
) -> tuple[AttributeClassifier, dict[str, float]]:
    """Train the classifier on every attribute (held-out ones too), then its object network; save it atomically if `out`.

    It judges generated images, so it trains on what they look like too: a quarter of the images
    (at most one per four training samples drawn) also pass through the pipeline's VAE (`vae`,
    default: the shipped pipeline's), and every batch gets random hue turns (relabelled by the
    nearest palette hue), saturation changes, blur and noise.
    An existing file at `out` is replaced only with `overwrite` (checked before training starts).
    """
    for name, value in (("n_train", n_train), ("steps", steps), ("batch_size", batch_size), ("object_steps", object_steps)):
        require_whole(name, value)
    if not lr > 0:
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    if out is not None:
        check_output_file(out, overwrite, "classifier file", flag="--overwrite (overwrite=True)", is_own=_is_classifier_file)
    dev = pick_device(device)
    if vae is None:
        vae = load_pipeline(PIPELINE_DIR).vae  # the tiny model's VAE: the judge learns its round trips
    train = _judge_training_set(n_train, seed, min(n_train // 4, steps * batch_size // 4), vae)
    val = make_dataset(2_000, seed=seed + 2, include=ATTRIBUTE_WORDS)
    with seeded(seed):
        model = AttributeClassifier().to(dev)
    attribute_params = [p for n, p in model.named_parameters() if not n.startswith("object.")]
    opt = torch.optim.AdamW(attribute_params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    labels = {g: train.labels(g) for g in ATTRIBUTES}
    pos = train.positions()
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="train classifier"):
        idx = torch.randint(0, len(train), (batch_size,), generator=gen)
        x, colour = _colour_augment(_prepare(train.images[idx], torch.device("cpu")), labels["colour"][idx], gen)
        x = _blur_and_noise(x, gen).to(dev)
        out_ = model(x)
        targets = {g: (colour if g == "colour" else labels[g][idx]).to(dev) for g in ATTRIBUTES}
        loss = sum(F.cross_entropy(out_[g], targets[g]) for g in ATTRIBUTES)
        loss = loss + 10.0 * F.mse_loss(out_["position"], pos[idx].to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_object_judge(model, vae=vae, steps=object_steps, seed=seed)
    model.eval()
    table = accuracy_table(model, val)
    if out is not None:
        save_classifier(model, out)
    return model, table


def train_object_judge(model: AttributeClassifier, vae: torch.nn.Module, n: int = 6_000, steps: int = 1_200,
                       seed: int = 0, held: int = 1_000) -> dict[str, float]:
    """Train the judge's object network (only it) to tell one object from none; returns its held-out error rates.

    Positives: n renders of every attribute, n // 4 `oversized_images` (objects larger than any render,
    as generated "large" objects sometimes are) and n // 2 `warped_images` (bent, some faded, as generated
    objects come out), half of them also through the VAE; negatives: as many `no_object_images`, half
    through the VAE too, so that what separates the two is the object, not the VAE's blur. Batches of
    64 + 64 with flips, blur and noise. Held out: `held` renders, warped objects and negatives, each clean
    and through the VAE.
    """
    require_whole("n", n)
    require_whole("steps", steps)
    require_whole("held", held)
    cpu = torch.device("cpu")

    def with_round_trips(images: torch.Tensor, k: int) -> torch.Tensor:
        return torch.cat([images, vae_round_trip(images[:k], vae)])

    pos = torch.cat([make_dataset(n, seed=seed + 601, include=ATTRIBUTE_WORDS).images,
                     oversized_images(n // 4, seed=seed + 605), warped_images(n // 2, seed=seed + 606)])
    k = len(pos)
    pos = with_round_trips(pos[torch.randperm(k, generator=torch.Generator().manual_seed(seed))], k // 2)
    neg = with_round_trips(no_object_images(k, seed=seed + 602), k // 2)
    net = model.object
    dev = next(net.parameters()).device
    with seeded(seed):  # a fresh start, whatever the network held
        for layer in net.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.reset_parameters()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    target = torch.cat([torch.ones(64), torch.zeros(64)]).to(dev)
    net.train()
    for _ in tqdm(range(steps), desc="train object judge"):
        ip, ineg = torch.randint(0, len(pos), (64,), generator=gen), torch.randint(0, len(neg), (64,), generator=gen)
        x = _prepare(torch.cat([pos[ip], neg[ineg]]), cpu)  # (128, 3, 32, 32)
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)
        x = _blur_and_noise(x, gen)
        loss = F.binary_cross_entropy_with_logits(net(x.to(dev))[:, 0], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    held_pos = with_round_trips(make_dataset(held, seed=seed + 603, include=ATTRIBUTE_WORDS).images, held)
    held_warped = with_round_trips(warped_images(held, seed=seed + 607), held)
    held_neg = with_round_trips(no_object_images(held, seed=seed + 604), held)

    def accepted(images: torch.Tensor) -> float:
        return classify(model, images)["object"].ge(OBJECT_THRESHOLD).float().mean().item()

    return {"renders_rejected": 1.0 - accepted(held_pos), "warped_rejected": 1.0 - accepted(held_warped),
            "no_object_accepted": accepted(held_neg)}


def save_classifier(model: AttributeClassifier, path: str | Path) -> None:
    """Write the weights as float16 safetensors, atomically (temp file, then rename)."""
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
