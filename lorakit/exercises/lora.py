"""Notebook 02's exercises: the LoRA layer, merging it, and adding it over a model; each with its checks and reference."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from lorakit.check import never_raises, report
from lorakit.lora import LoRALinear  # the reference answer to exercise 1: the kit's own layer
from lorakit.seeds import seeded

IN, OUT, RANK, ALPHA = 12, 10, 3, 6.0


def _fresh_pair(layer_cls: Callable[..., nn.Module]) -> tuple[nn.Linear, nn.Module]:
    with seeded(0):
        base = nn.Linear(IN, OUT)
        return base, layer_cls(base, rank=RANK, alpha=ALPHA)


@never_raises
def check_lora_layer(layer_cls: Callable[..., nn.Module]) -> bool:
    """Check a learner's LoRA layer class: built as layer_cls(base, rank, alpha), with lora_A, lora_B."""
    try:
        base, layer = _fresh_pair(layer_cls)
    except NotImplementedError:
        return report(False, "the layer is not written yet (it raises NotImplementedError)", written=False)
    for name in ("lora_A", "lora_B"):
        if not isinstance(getattr(layer, name, None), torch.Tensor):
            return report(False, f"the layer needs a parameter called {name}")
    A, B = layer.lora_A, layer.lora_B
    if A.shape == (IN, RANK) and B.shape == (RANK, OUT):
        return report(False, f"A and B are transposed: A should be (rank, in) = {(RANK, IN)} and B (out, rank) = "
                              f"{(OUT, RANK)}, as in nn.Linear, whose weight is (out, in)")
    if A.shape != (RANK, IN) or B.shape != (OUT, RANK):
        return report(False, f"shapes: lora_A is {tuple(A.shape)}, lora_B {tuple(B.shape)}; expected A (rank, in) = "
                              f"{(RANK, IN)} and B (out, rank) = {(OUT, RANK)}")
    if not (A.requires_grad and B.requires_grad):
        return report(False, "A and B must be trainable (nn.Parameter with requires_grad=True)")
    if base.weight.requires_grad:
        return report(False, "the base weight W is still trainable: freeze it (base.weight.requires_grad_(False)), "
                              "or training updates all of W and it is no longer LoRA")
    x = torch.randn(5, IN)
    with torch.no_grad():
        if not torch.equal(layer(x), base(x)):
            return report(False, "a fresh adapter must change nothing: initialise B to zeros (and A randomly), so "
                                  "B @ A = 0 at the start")
        if torch.count_nonzero(A) == 0:
            return report(False, "A is all zeros: with both A and B zero the gradients of both are zero and the "
                                  "adapter never learns; initialise A randomly")
        B.normal_()
        W, b = base.weight, base.bias
        got = layer(x)
        ref = x @ W.T + b + (ALPHA / RANK) * (x @ A.T @ B.T)
        if torch.allclose(got, ref, atol=1e-5):
            return report(True, "your LoRA layer matches W x + (alpha / rank) · B A x")
        if torch.allclose(got, x @ W.T + b + x @ A.T @ B.T, atol=1e-5):
            return report(False, "your output differs from the reference where B≠0 by a constant factor: did you "
                                  "apply the scale alpha / rank?")
        if torch.allclose(got, x @ W.T + b + ALPHA * (x @ A.T @ B.T), atol=1e-5):
            return report(False, "you scaled by alpha; the scale is alpha / rank, so the update's size does not "
                                  "grow with the rank")
        if torch.allclose(got, (ALPHA / RANK) * (x @ A.T @ B.T), atol=1e-5):
            return report(False, "the output is only the update: add the frozen layer's output W x + b")
    return report(False, "your output differs from W x + (alpha / rank) · B A x where B≠0; check the order "
                          "x → A → B (first project down to rank r, then back up)")


@never_raises
def check_merge(merge_fn: Callable[[nn.Linear, torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check a learner's merge(base, A, B, scaling) -> merged weight, (out, in)."""
    with seeded(1):
        base = nn.Linear(IN, OUT)
        A, B = torch.randn(RANK, IN), torch.randn(OUT, RANK)
    s = ALPHA / RANK
    W0 = base.weight.detach().clone()
    try:
        merged = merge_fn(base, A, B, s)
    except NotImplementedError:
        return report(False, "merge is not written yet (it raises NotImplementedError)", written=False)
    except RuntimeError as err:
        return report(False, f"merge raised {err!s:.80}: is it B @ A (out×r times r×in) rather than A @ B?")
    if not isinstance(merged, torch.Tensor) or merged.shape != W0.shape:
        shape = tuple(merged.shape) if isinstance(merged, torch.Tensor) else type(merged).__name__
        return report(False, f"merge should return the merged weight of shape (out, in) = {tuple(W0.shape)}, got {shape}")
    if torch.allclose(merged, W0 + s * B @ A, atol=1e-5):
        x = torch.randn(4, IN)
        same = torch.allclose(x @ merged.T, x @ W0.T + s * (x @ A.T @ B.T), atol=1e-4)
        return report(same, "merged weight W + s·BA gives the same outputs as the unmerged layer" if same
                       else "the merged weight is right but outputs differ; is the bias applied?")
    if torch.allclose(merged, W0 + B @ A, atol=1e-5):
        return report(False, "the merged weight lacks the scale: W + (alpha / rank) · B @ A")
    if torch.allclose(merged, s * B @ A, atol=1e-5):
        return report(False, "merge returned only the update: add it to the base weight W")
    if torch.allclose(merged, W0 - s * B @ A, atol=1e-5):
        return report(False, "the sign is flipped: merging adds the update, W + s·BA")
    return report(False, "the merged weight differs from W + (alpha / rank) · B @ A")


def reference_merge(base: nn.Linear, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """The reference answer to exercise 2: W' = W + s · B A, (out, in)."""
    return base.weight + scaling * B @ A  # (out, r) @ (r, in) -> (out, in)


def reference_add_lora(model: nn.Module, targets: list[str], layer_cls: Callable[..., nn.Module], rank: int,
                       alpha: float) -> list[str]:
    """The reference answer to exercise 3: wrap every nn.Linear whose name ends with a target (peft's rule: the
    whole name, or its dotted suffix); freeze the rest."""
    model.requires_grad_(False)
    chosen = [name for name, m in model.named_modules()  # listed first: then the model changes
              if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)]
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, layer_cls(getattr(parent, child), rank=rank, alpha=alpha))
    return chosen


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q, self.to_k, self.proj = nn.Linear(IN, IN), nn.Linear(IN, IN), nn.Linear(IN, OUT)
        self.to_out = nn.Sequential(nn.Linear(IN, IN), nn.Dropout(0.0))  # as in diffusers' Attention
        self.norm = nn.LayerNorm(IN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, IN) -> (B, OUT)
        return self.proj(self.norm(self.to_out(self.to_q(x) + self.to_k(x))))


def _toy_model() -> nn.Module:
    with seeded(2):
        return nn.Sequential(_Block(), nn.ReLU(), nn.Sequential(nn.Linear(OUT, IN)))


@never_raises
def check_add_lora(add_lora_fn: Callable[..., list[str]]) -> bool:
    """Check a learner's add_lora(model, targets, layer_cls, rank, alpha) -> names of the wrapped layers."""
    model, targets = _toy_model(), ["to_q", "to_k", "to_out.0"]
    x = torch.randn(3, IN)
    with torch.no_grad():
        before = model(x)
    names = add_lora_fn(model, targets, LoRALinear, rank=RANK, alpha=ALPHA)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoRALinear))
    if not wrapped:
        return report(False, "no layer was replaced: find the parent module of each target (model.get_submodule of "
                             "the name before the last dot) and setattr(parent, child_name, layer_cls(old, ...))")
    expected = ["0.to_k", "0.to_out.0", "0.to_q"]
    if wrapped != expected:
        return report(False, f"wrapped {wrapped}, expected {expected} for targets {targets}: a module matches when its "
                             "name equals a target or ends with '.' + target (so 'to_out.0' matches '0.to_out.0'), "
                             "and only nn.Linear layers are wrapped")
    if sorted(names or []) != wrapped:
        return report(False, f"return the names of the wrapped layers (got {names!r})")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    if any("lora_" not in n for n in trainable):
        return report(False, "other parameters are still trainable (e.g. "
                             f"{next(n for n in trainable if 'lora_' not in n)}): freeze the whole model first "
                             "(model.requires_grad_(False)), then add the adapters")
    with torch.no_grad():
        if not torch.equal(model(x), before):
            return report(False, "the model's output changed: a fresh adapter must change nothing")
    return report(True, f"wrapped {', '.join(wrapped)} and froze everything else, as peft's inject_adapter_in_model does")
