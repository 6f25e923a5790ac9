"""Several seeds' LoRA adapters trained at once, in one batched forward pass.

A DreamBooth step at batch 4 costs this kit's CPU about as much in Python and dispatch overhead as
in arithmetic, so five seeds trained one after another pay that overhead five times. Stacked, the
K adapters share one pass through the frozen model: each LoRA factor holds the K seeds' weights in
one tensor, (K, out, in), and applies them with one batched matmul (a grouped convolution for a
convolution's LoRA), sample group k going through adapter k only. Each seed still starts from its
own init, draws its own batches from its own generator, and has its own loss and AdamW state, so a
stacked run trains the same K adapters as K runs of `lorakit.finetune.train` (up to float rounding;
LoRA dropout draws its masks differently). `benchmarks/many_seeds.py` measures the gain.

This is an accelerator for the course's many-seed experiments, not a lesson: each pipeline keeps its
ordinary peft adapter, which holds its seed's weights again when training ends.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from peft.tuners.lora import LoraLayer
from torch import nn
from tqdm.auto import tqdm

from lorakit.data import ShapesDataset
from lorakit.diffusion import (
    Denoiser,
    EncodedData,
    TrainConfig,
    optimizer_step,
    require_config,
    training_batch,
)
from lorakit.finetune import Prior, encoded_training_data


class GroupedLinear(nn.Module):
    """K bias-free linear maps in one: sample group k of the batch goes through weight[k]."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # (K, out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K*G, ..., in), group k contiguous
        k = self.weight.shape[0]
        y = torch.bmm(x.reshape(k, -1, x.shape[-1]), self.weight.transpose(1, 2))  # (K, G*..., out)
        return y.reshape(*x.shape[:-1], -1)


class GroupedConv2d(nn.Module):
    """K bias-free convolutions in one grouped convolution: sample group k goes through weight[k]."""

    def __init__(self, layers: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        first = layers[0]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # (K, out, in, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K*G, C, H, W), group k contiguous
        k, out = self.weight.shape[:2]
        g = x.shape[0] // k
        side = x.reshape(k, g, *x.shape[1:]).transpose(0, 1).reshape(g, k * x.shape[1], *x.shape[2:])  # (G, K*C, H, W)
        y = F.conv2d(side, self.weight.flatten(0, 1), None, self.stride, self.padding, self.dilation, groups=k)
        return y.reshape(g, k, out, *y.shape[2:]).transpose(0, 1).reshape(k * g, out, *y.shape[2:])  # (K*G, out, H', W')


def _grouped(layers: Sequence[nn.Module]) -> nn.Module:
    """The grouped module standing in for K pipelines' copies of one LoRA factor."""
    if any(getattr(layer, "bias", None) is not None for layer in layers):
        raise ValueError("stacked training supports LoRA factors without bias (peft's default lora_bias=False)")
    if all(type(layer) is nn.Linear for layer in layers):
        return GroupedLinear(layers)
    if all(type(layer) is nn.Conv2d for layer in layers):
        return GroupedConv2d(layers)
    raise TypeError(f"stacked training supports LoRA on Linear and Conv2d layers, got {type(layers[0]).__name__}")


class StackedAdapters(AbstractContextManager):
    """K pipelines' adapters named `name`, stacked into the first pipeline's LoRA layers while the block runs.

    Inside the block, the first pipeline's UNet and text encoder compute all K adapters: a batch of
    K equal sample groups sends group k through adapter k. `parameters()` are the stacked factors to
    train; `sync()` copies them back into each pipeline's own adapter (as leaving the block does);
    `unstacked()` gives each pipeline its own adapter back for a moment (e.g. to save a checkpoint).
    """

    def __init__(self, pipes: Sequence[StableDiffusionPipeline], name: str = "default") -> None:
        if not pipes:
            raise ValueError("no pipelines to stack: pass one pipeline per seed")
        if len({id(p) for p in pipes}) != len(pipes):
            raise ValueError("the same pipeline is passed twice: pass a separate pipeline (load_pipeline()) per seed")
        self.k, self.name = len(pipes), name
        self._slots: list[tuple[nn.ModuleDict, list[nn.Module], nn.Module]] = []  # (carrier's dict, own copies, grouped)
        for part in ("unet", "text_encoder"):
            modules = [dict(getattr(p, part).named_modules()) for p in pipes]
            layers = [n for n, m in modules[0].items() if isinstance(m, LoraLayer) and name in m.lora_A]
            for i, mods in enumerate(modules[1:], 1):
                theirs = [n for n, m in mods.items() if isinstance(m, LoraLayer) and name in m.lora_A]
                if theirs != layers:
                    raise ValueError(f"pipeline {i}'s {part} adapter {name!r} has other layers than pipeline 0's: "
                                     "add the same adapter to every pipeline (same rank, targets, conv)")
            for n in layers:
                for factor in ("lora_A", "lora_B"):
                    own = [getattr(mods[n], factor)[name] for mods in modules]
                    if len({tuple(m.weight.shape) for m in own}) != 1:
                        raise ValueError(f"{part}.{n}.{factor} differs in shape between pipelines: use one rank for all")
                    self._slots.append((getattr(modules[0][n], factor), own, _grouped(own)))
        if not self._slots:
            raise ValueError(f"no LoRA adapter named {name!r} in the first pipeline: add one to each (add_adapter)")

    def parameters(self) -> list[nn.Parameter]:
        """The stacked factors, (K, ...) each: what the optimizer trains."""
        return [grouped.weight for _, _, grouped in self._slots]

    def __enter__(self) -> StackedAdapters:
        for carrier, _, grouped in self._slots:
            carrier[self.name] = grouped
        return self

    @torch.no_grad()
    def sync(self) -> None:
        """Copy each seed's stacked weights into its own pipeline's adapter."""
        for _, own, grouped in self._slots:
            for k, layer in enumerate(own):
                layer.weight.copy_(grouped.weight[k])

    def __exit__(self, *exc) -> None:
        self.sync()
        for carrier, own, _ in self._slots:
            carrier[self.name] = own[0]

    @contextmanager
    def unstacked(self) -> Iterator[None]:
        """Inside a stacked block: each pipeline with its own adapter holding its current weights, for a moment."""
        self.__exit__(None, None, None)
        try:
            yield
        finally:
            self.__enter__()


def train_stacked(
    pipes: Sequence[StableDiffusionPipeline],
    data: ShapesDataset | EncodedData,
    configs: Sequence[TrainConfig],
    prior: Prior | None = None,
    on_step: Sequence[Callable[[int, float], None] | None] | None = None,
    progress: bool = False,
) -> list[list[float]]:
    """Train pipes[k]'s adapter as `lorakit.finetune.train(pipes[k], data, configs[k], prior)` would, all K per step.

    The configs may differ in their seed only. Returns each seed's loss at every step; `on_step[k]`
    runs after every step with seed k's adapter synced into pipes[k] (e.g. a checkpoint saver).
    """
    if len(configs) != len(pipes):
        raise ValueError(f"one config per pipeline: got {len(configs)} configs for {len(pipes)} pipelines")
    configs = [require_config(c, default_lr=1e-3) for c in configs]
    if any(dataclasses.replace(c, seed=0) != dataclasses.replace(configs[0], seed=0) for c in configs):
        raise ValueError("stacked runs may differ in their seed only; train other settings as separate stacks")
    if on_step is not None and len(on_step) != len(pipes):
        raise ValueError(f"one on_step callback (or None) per pipeline: got {len(on_step)} for {len(pipes)} pipelines")
    config = configs[0]
    stack = StackedAdapters(pipes)  # checks the adapters before anything trains
    carrier = pipes[0]
    enc, prior_enc = encoded_training_data(carrier, data, config, prior)
    text_trains = any(p.requires_grad for p in carrier.text_encoder.parameters())
    m = Denoiser.of(carrier)
    gens = [torch.Generator().manual_seed(c.seed) for c in configs]
    losses: list[list[float]] = [[] for _ in pipes]
    with stack:
        opt = torch.optim.AdamW(stack.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        carrier.unet.train()
        carrier.text_encoder.train(text_trains)
        for step in tqdm(range(config.steps), desc=f"train {len(pipes)} seeds", disable=not progress):
            parts = []  # per seed: its instance batch, then its prior batch (the order `train` draws them)
            for gen in gens:
                parts.append(training_batch(m, enc, config.batch_size, gen, config.caption_dropout, text_trains))
                if prior_enc is not None:
                    parts.append(training_batch(m, prior_enc, config.batch_size, gen, config.caption_dropout, text_trains))
            noisy, t, noise, condition = (torch.cat(x) for x in zip(*parts))  # (K*P*B, ...), seed k's samples contiguous
            text = m.text_encoder(condition)[0] if text_trains else condition
            error = (m.unet(noisy, t, encoder_hidden_states=text).sample - noise).pow(2)
            per = error.mean(dim=(1, 2, 3)).view(len(pipes), -1, config.batch_size).mean(2)  # (K, P): instance, prior
            seed_loss = per[:, 0] + (prior.weight * per[:, 1] if prior is not None else 0.0)  # (K,)
            optimizer_step(opt, seed_loss.sum(), step, config.lr)
            for k, value in enumerate(seed_loss.tolist()):
                losses[k].append(value)
            if on_step is not None:
                with stack.unstacked():
                    for k, callback in enumerate(on_step):
                        if callback is not None:
                            callback(step + 1, losses[k][-1])
    for pipe in pipes:  # every seed's own layers, the carrier's included, back in inference mode (LoRA dropout off)
        pipe.unet.eval()
        pipe.text_encoder.eval()
    return losses
