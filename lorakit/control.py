"""LoRA as a control knob: a concept slider and concept erasure, both taught by the frozen model itself.

Both methods train a LoRA to predict, for a prompt c, a noise that the *frozen* model's own
predictions define, so they need no new images:

- concept slider (Gandikota et al. 2023, "Concept Sliders"): at adapter scale s,
  ε_LoRA(x_t, c) = ε(x_t, c) + s·η·(ε(x_t, c+) − ε(x_t, c−)), e.g. c+ = "a large red circle",
  c− = "a small red circle", c = "a red circle"; trained at s = +1 and s = −1, so the scale becomes a
  continuous size knob;
- concept erasure (Gandikota et al. 2023, "Erasing Concepts from Diffusion Models", ESD):
  ε_LoRA(x_t, c) = ε(x_t, c−) − η·(ε(x_t, c) − ε(x_t, c−)), with c− the prompt without the concept
  word (ESD uses the empty prompt, which erases everything the prompt names): the prompt naming the
  concept is pushed away from it, as negative guidance would; η = 0 maps it onto c− (concept
  ablation, Kumari et al. 2023).

x_t are noised latents of ordinary images; ε is the UNet with the adapter switched off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from peft.tuners.lora import LoraLayer
from tqdm.auto import tqdm

from lorakit.adapters import add_adapter
from lorakit.arguments import require_whole
from lorakit.diffusion import EncodedData, TrainConfig, noised_batch, optimizer_step, require_config
from lorakit.pipeline import LORA_TARGETS, training_scheduler
from lorakit.stacked import StackedAdapters

# ESD-x: only the cross-attention keys and values, the layers that read the prompt
CROSS_ATTENTION_KV = ("attn2.to_k", "attn2.to_v")
CONTROL_CONFIG = TrainConfig(steps=300, lr=1e-3, batch_size=16)  # train_control's default


@dataclass(frozen=True)
class Target:
    """One training prompt and the frozen predictions its target is built from."""

    prompt: str  # c: what the adapter sees
    plus: str  # c+ (slider) or the concept prompt (erasure)
    minus: str  # c- (slider) or the prompt without the concept word (erasure)


def slider_targets(plus_word: str, minus_word: str, colours: Sequence[str], shapes: Sequence[str]) -> list[Target]:
    """Prompts "a {colour} {shape}" with c± = "a {plus/minus word} {colour} {shape}"."""
    return [Target(f"a {c} {s}", f"a {plus_word} {c} {s}", f"a {minus_word} {c} {s}") for c in colours for s in shapes]


def erasure_targets(concept: str, sizes: Sequence[str], shapes: Sequence[str], anchor: str | None = None) -> list[Target]:
    """Prompts naming the concept ("a large red circle"), each trained away from the concept.

    The concept's direction is measured against an anchor: by default the same prompt without the
    concept word ("a large circle"), so only the concept is erased, not the size and shape drawn
    with it; ``anchor=""`` is ESD's original choice, the empty prompt.
    """
    return [Target(f"a {z} {concept} {s}", f"a {z} {concept} {s}", f"a {z} {s}" if anchor is None else anchor)
            for z in sizes for s in shapes]


def slider_target(e_c: torch.Tensor, e_plus: torch.Tensor, e_minus: torch.Tensor, scale: float,
                  eta: float = 1.0) -> torch.Tensor:
    """Concept Sliders' target at adapter scale s: the frozen prediction for c moved s·η along ε(c+) - ε(c-)."""
    return e_c + scale * eta * (e_plus - e_minus)


def esd_target(e_concept: torch.Tensor, e_anchor: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """ESD's target: the anchor's frozen prediction pushed η away from the concept, ε(a) - η·(ε(c) - ε(a))."""
    return e_anchor - eta * (e_concept - e_anchor)


def keep_targets(prompts: Sequence[str]) -> list[Target]:
    """Prompts the adapter must leave alone: c = c+ = c-, so either target is the frozen prediction itself."""
    return [Target(p, p, p) for p in prompts]


def add_control_adapter(pipe: StableDiffusionPipeline, rank: int = 4, targets: Sequence[str] = LORA_TARGETS,
                        name: str = "control", seed: int = 0) -> StableDiffusionPipeline:
    """Add a peft LoRA to the UNet only (the text encoder stays frozen, so prompts mean what they meant)."""
    return add_adapter(pipe, rank=rank, text_encoder=False, name=name, seed=seed, targets=targets)


@torch.no_grad()
def _embed(pipe: StableDiffusionPipeline, prompts: Sequence[str]) -> torch.Tensor:
    """The frozen text encoder's outputs for prompts."""
    ids = pipe.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]  # (P, 16, 64)


def train_control(
    pipe: StableDiffusionPipeline,
    latents: EncodedData,
    targets: Sequence[Target],
    kind: str,
    config: TrainConfig = CONTROL_CONFIG,
    eta: float = 1.0,
    name: str = "control",
    progress: bool = True,
) -> tuple[list[float], float]:
    """Train the UNet adapter `name` as a "slider" or an "erasure"; returns (losses, seconds).

    From `config` it uses steps, lr (None: 1e-3), batch_size and seed: the targets come from the frozen
    model, so caption dropout, weight decay and augmentation have no part here.

    Each step draws a batch of noised latents and, per sample, one target; the frozen model (the
    adapter at weight 0) predicts the noise for the target's prompts in one batched pass, and the
    adapter (at weight +1, or -1 on every other step for a slider) learns the combination.
    When it returns, the adapter `name` is the UNet's only active adapter, at weight 1.
    """
    return train_control_seeds([pipe], latents, targets, kind, config, [require_config(config, CONTROL_CONFIG.lr).seed],
                               eta, name, progress)[0]


def train_control_seeds(
    pipes: Sequence[StableDiffusionPipeline],
    latents: EncodedData,
    targets: Sequence[Target],
    kind: str,
    config: TrainConfig,
    seeds: Sequence[int],
    eta: float = 1.0,
    name: str = "control",
    progress: bool = True,
) -> list[tuple[list[float], float]]:
    """`train_control` once per seed, pipes[k] with seeds[k] (config.seed is replaced), all in one batched pass.

    Each seed draws its own batches and targets from its own generator and has its own loss and
    AdamW state (`lorakit.stacked`), so each adapter is the one `train_control` trains alone, up to
    float rounding; give each pipeline's adapter its own init (`add_control_adapter(seed=...)`).
    Returns (losses, seconds) per seed, the seconds being the stacked run's divided by the seeds.
    """
    if kind not in ("slider", "erasure"):
        raise ValueError(f"kind must be 'slider' or 'erasure', got {kind!r}")
    if not targets:
        raise ValueError("no targets to train on: build them with slider_targets or erasure_targets")
    config = require_config(config, default_lr=CONTROL_CONFIG.lr)
    if config.augment or config.weight_decay:
        raise ValueError("train_control uses the config's steps, lr, batch_size and seed only; "
                         "leave augment and weight_decay at their defaults")
    if len(seeds) != len(pipes):
        raise ValueError(f"one seed per pipeline: got {len(seeds)} seeds for {len(pipes)} pipelines")
    for s in seeds:
        require_whole("seed", s, minimum=0)
    steps, batch_size = config.steps, config.batch_size
    lr = config.lr
    for pipe in pipes:
        adapters = sorted(getattr(pipe.unet, "peft_config", None) or {})
        if name not in adapters:
            raise ValueError(f"the UNet has no adapter named {name!r} (it has {adapters or 'none'}): "
                             "add one with add_control_adapter(pipe, name=...) and pass the same name here")
    stack = StackedAdapters(pipes, name)  # checks that the adapters match before anything changes
    for pipe in pipes:
        pipe.unet.set_adapters([name], weights=[1.0])  # the only active adapter (peft keeps an active adapter trainable)
    pipe, unet = pipes[0], pipes[0].unet  # the carrier: its UNet computes every seed's adapter
    prompts = sorted({p for t in targets for p in (t.prompt, t.plus, t.minus)})
    row = {p: i for i, p in enumerate(prompts)}
    emb = _embed(pipe, prompts)  # (P, 16, 64)
    # per target: rows of its prompt, c+ and c- in emb
    which = torch.tensor([[row[t.prompt], row[t.plus], row[t.minus]] for t in targets])  # (T, 3)
    schedule = training_scheduler()
    scaling = pipe.vae.config.scaling_factor
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    dev = unet.device
    scales = (1.0, -1.0) if kind == "slider" else (1.0,)
    losses: list[list[float]] = [[] for _ in pipes]
    start = time.perf_counter()
    with stack:
        opt = torch.optim.AdamW(stack.parameters(), lr=lr)
        unet.train()
        for step in tqdm(range(steps), desc=f"{kind} LoRA" + (f", {len(pipes)} seeds" if len(pipes) > 1 else ""),
                         disable=not progress):
            draws = []
            for gen in gens:  # per seed, in train_control's order: the batch, then its targets
                _, noisy, _, t = noised_batch(latents, batch_size, gen, schedule, scaling, dev)  # noisy: (B, 4, 8, 8)
                draws.append((noisy, t, which[torch.randint(0, len(targets), (batch_size,), generator=gen)]))  # rows (B, 3)
            noisy, t, rows = (torch.cat(x) for x in zip(*draws))  # (K*B, ...), seed k's samples contiguous
            c, plus, minus = (emb[rows[:, k]].to(dev) for k in range(3))  # each (K*B, 16, 64)
            with torch.no_grad():  # the frozen model: the adapter at weight 0 adds exactly nothing
                _set_weight(unet, name, 0.0)
                hidden = torch.cat([plus, minus, c] if kind == "slider" else [plus, minus])
                k = len(hidden) // len(noisy)
                frozen = unet(noisy.repeat(k, 1, 1, 1), t.repeat(k), encoder_hidden_states=hidden).sample.chunk(k)
            s = scales[step % len(scales)]
            if kind == "slider":
                e_plus, e_minus, e_c = frozen
                goal = slider_target(e_c, e_plus, e_minus, s, eta)
            else:
                e_concept, e_anchor = frozen
                goal = esd_target(e_concept, e_anchor, eta)
            _set_weight(unet, name, s)
            error = (unet(noisy, t, encoder_hidden_states=c).sample - goal).pow(2)  # (K*B, 4, 8, 8)
            seed_loss = error.view(len(pipes), -1).mean(1)  # (K,): each seed's MSE
            optimizer_step(opt, seed_loss.sum(), step, lr)
            for k, value in enumerate(seed_loss.tolist()):
                losses[k].append(value)
        unet.eval()
    seconds = (time.perf_counter() - start) / len(pipes)
    for p in pipes:
        _set_weight(p.unet, name, 1.0)
    return [(loss, seconds) for loss in losses]


def _set_weight(unet: torch.nn.Module, name: str, weight: float) -> None:
    """The adapter's weight in every layer, through peft's `set_scale` (what diffusers' `set_adapters`
    does per layer, without re-activating adapters on every step)."""
    for module in unet.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(name, weight)
