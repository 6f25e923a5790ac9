"""LoRA from scratch: the layer and the functions that put it into a model.

The lesson's implementation, kept small and explicit. peft's `tuners/lora/layer.py` is the real
thing (many layer types, several adapters per layer, DoRA, quantised bases); this file does what
peft does for one adapter on `nn.Linear`, with the same initialisation and the same state-dict
keys, so the two can be checked against each other and exchange weights.

    y = W x + s · B A x,   A: (r, in), B: (out, r),   s = alpha / r   (rsLoRA: alpha / sqrt(r))
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.formats import split_key


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update s·B·A (Hu et al. 2021)."""

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_rank_alpha(rank, alpha, base.in_features, base.out_features, dropout)
        self.base = base
        self.base.requires_grad_(False)  # W (and its bias) stay frozen
        self.rank, self.alpha, self.rslora = rank, float(alpha), rslora
        self.scaling = alpha / math.sqrt(rank) if rslora else alpha / rank  # s, fixed by the adapter
        self.multiplier = 1.0  # how strongly to apply it at inference (set_lora_multiplier); 1 while training
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))  # (out, r)
        if init == "kaiming":  # peft's default (init_lora_weights=True), like nn.Linear's own init
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        elif init == "gaussian":  # peft's "gaussian", used by diffusers' training scripts
            nn.init.normal_(self.lora_A, std=1 / rank)
        else:
            raise ValueError(f"init must be 'kaiming' or 'gaussian', got {init!r}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self._merged_delta: torch.Tensor | None = None  # exactly what merge() added to W

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to W: s · B @ A (times the multiplier); (out, in)."""
        return self.scaling * self.multiplier * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x + b, plus s · B A x unless the update is merged into W; (..., in) -> (..., out)."""
        y = self.base(x)
        if self.merged:
            return y
        return y + self.scaling * self.multiplier * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s·BA: inference then costs exactly what the base layer costs."""
        if not self.merged:
            self._merged_delta = self.delta_weight().to(self.base.weight.dtype)
            self.base.weight += self._merged_delta
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s·BA: back to the frozen base weight (up to float rounding).

        Subtracts the update that merge() added, even if A, B or the multiplier changed since.
        """
        if self.merged:
            self.base.weight -= self._merged_delta
            self._merged_delta = None
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:.4g}, merged={self.merged}"


def _check_rank_alpha(rank: int, alpha: float, in_features: int, out_features: int, dropout: float) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool):
        raise TypeError(f"rank must be an int, got {type(rank).__name__}")
    if not 1 <= rank <= min(in_features, out_features):
        raise ValueError(
            f"rank must satisfy 1 <= rank <= min(in_features, out_features) = {min(in_features, out_features)} "
            f"for a {in_features}->{out_features} layer, got {rank}; a larger rank cannot add expressiveness"
        )
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0 (the adapter's scale is alpha / rank), got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def linear_names(model: nn.Module) -> list[str]:
    """Names of every nn.Linear in a model (the modules LoRA can wrap)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def matches_target(name: str, target: str) -> bool:
    """peft's rule: a target matches a module name exactly or as its dotted suffix."""
    return name == target or name.endswith("." + target)


def _names_list(value: Iterable[str] | str, what: str, example: str) -> list[str]:
    """A list of names from a list/tuple; a lone string is refused (it would be read letter by letter)."""
    if isinstance(value, str):
        raise TypeError(f"{what} must be a list of names, e.g. {example}; got the string {value!r} "
                        f"(write [{value!r}] for one name)")
    return list(value)


def add_lora(
    model: nn.Module,
    target_modules: Iterable[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    rslora: bool = False,
    init: str = "kaiming",
) -> list[str]:
    """Wrap every nn.Linear whose name ends with a target in a LoRALinear; freeze everything else.

    Returns the names of the wrapped modules. A target that matches no Linear raises an error that
    lists the valid names. Adapters added by an earlier call stay trainable; a target that is
    already a LoRA layer is refused. Everything is checked before the model changes.
    """
    targets = _names_list(target_modules, "target_modules", "['to_q', 'to_v']")
    if not targets:
        raise ValueError("target_modules is empty; name at least one Linear module, e.g. ['to_q', 'to_v']")
    if init not in ("kaiming", "gaussian"):
        raise ValueError(f"init must be 'kaiming' or 'gaussian', got {init!r}")
    peft = peft_lora_names(model)
    if peft:
        raise ValueError(f"the model already has peft LoRA layers (e.g. {peft[0]}); add lorakit's LoRA to a fresh "
                         "model, or keep using peft (model.add_adapter) for this one")
    existing = lora_layers(model)
    inside = tuple(f"{n}." for n in existing)
    names = [n for n in linear_names(model) if not n.startswith(inside)]  # not the base Linear of a LoRA layer
    again = sorted(n for n in existing if any(matches_target(n, t) for t in targets))
    if again:
        raise ValueError(f"{len(again)} target layer(s) already have LoRA (e.g. {again[:2]}): a layer takes one "
                         "adapter here; call remove_lora(model) first, or load a fresh model")
    unknown = [t for t in targets if not any(matches_target(n, t) for n in names)]
    if unknown:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in names} | {".".join(n.rsplit(".", 2)[-2:]) for n in names if "." in n})
        raise ValueError(f"target module(s) {unknown} match no nn.Linear in the model; valid names end with one of: {suffixes}")
    chosen = [n for n in names if any(matches_target(n, t) for t in targets)]
    for name in chosen:  # every layer's rank and alpha checked before the first one is wrapped
        layer = model.get_submodule(name)
        _check_rank_alpha(rank, alpha, layer.in_features, layer.out_features, dropout)
    model.requires_grad_(False)
    for layer in existing.values():  # an earlier call's adapters keep training
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout, rslora, init))
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRALinear in a model, by the name of the module it replaced."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def peft_lora_names(model: nn.Module) -> list[str]:
    """Names of the layers peft's LoRA wraps in a model (they keep their factors in a ModuleDict per adapter)."""
    return [name for name, m in model.named_modules() if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)]


def merged_lora_names(model: nn.Module) -> list[str]:
    """Names of LoRA layers, lorakit's or peft's, whose update is merged into W (they no longer train)."""
    return [name for name, m in model.named_modules()
            if (isinstance(m, LoRALinear) or isinstance(getattr(m, "lora_A", None), nn.ModuleDict))
            and bool(getattr(m, "merged", False))]


def _require_lora(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRALinear layers; call add_lora(model, ...) first")
    return layers


def remove_lora(model: nn.Module, merge: bool = False) -> None:
    """Put the plain nn.Linear layers back (merging the updates into them first if `merge`)."""
    for name, layer in _require_lora(model).items():
        layer.merge() if merge else layer.unmerge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)


def merge_lora(model: nn.Module) -> None:
    """Merge every adapter into its base weight (W <- W + s·BA)."""
    for layer in _require_lora(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo merge_lora (W <- W - s·BA)."""
    for layer in _require_lora(model).values():
        layer.unmerge()


def set_lora_multiplier(model: nn.Module, multiplier: float) -> None:
    """Apply every adapter's update `multiplier` times (0 = base model, 1 = as trained); unmerged layers only.

    The multiplier is what diffusers calls an adapter's weight (`set_adapters`) and kohya the
    multiplier; it is not the scaling alpha / r, which belongs to the adapter.
    """
    if not (isinstance(multiplier, (int, float)) and math.isfinite(multiplier)):
        raise ValueError(f"multiplier must be a finite number (0 = base model, 1 = as trained), got {multiplier!r}")
    layers = _require_lora(model)
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise RuntimeError(f"{merged[0]} is merged; unmerge_lora(model) before changing the multiplier")
    for layer in layers.values():
        layer.multiplier = float(multiplier)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, with peft's key names ("<module>.lora_A.weight", "<module>.lora_B.weight")."""
    state = {}
    for name, layer in _require_lora(model).items():
        state[f"{name}.lora_A.weight"] = layer.lora_A.detach().clone()
        state[f"{name}.lora_B.weight"] = layer.lora_B.detach().clone()
    return state


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter weights into the model's LoRALinear layers; every key and shape must match."""
    layers = _require_lora(model)
    expected = {f"{n}.lora_{ab}.weight" for n in layers for ab in "AB"}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"this LoRA state dict does not match the model: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]}); was it made for another model or other targets?"
        )
    merged = [name for name, layer in layers.items() if layer.merged]
    if merged:
        raise RuntimeError(f"{len(merged)} LoRA layers are merged (e.g. {merged[0]}): loading new factors would leave "
                           "the old update in W; call unmerge_lora(model) first")
    wrong = []
    for name, layer in layers.items():  # every key checked before the first one is written
        for ab in "AB":
            param, value = getattr(layer, f"lora_{ab}"), state[f"{name}.lora_{ab}.weight"]
            if not isinstance(value, torch.Tensor) or param.shape != value.shape:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                wrong.append(f"{name}.lora_{ab}: the model expects shape {tuple(param.shape)}, the state dict has {shape}")
            elif not value.is_floating_point() or not torch.isfinite(value).all():
                wrong.append(f"{name}.lora_{ab}: {'holds NaN or inf' if value.is_floating_point() else f'dtype {value.dtype}'}")
    if wrong:
        raise ValueError(f"this LoRA state dict does not fit ({len(wrong)} problems; nothing was loaded): "
                         + "; ".join(wrong[:3]) + " (a different rank, or a broken file?)")
    with torch.no_grad():
        for name, layer in layers.items():
            for ab in "AB":
                getattr(layer, f"lora_{ab}").copy_(state[f"{name}.lora_{ab}.weight"])


# -- exchanging weights with peft and diffusers -------------------------------------------------


def to_peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter in peft's format: what `get_peft_model_state_dict` returns for the same adapter.

    Pass it as `unet_lora_layers=` to `StableDiffusionPipeline.save_lora_weights`, with
    `unet_lora_adapter_metadata=peft_metadata(model)` so that alpha travels with the weights.
    """
    return lora_state_dict(model)


def peft_metadata(model: nn.Module) -> dict:
    """The LoraConfig fields (r, lora_alpha, target_modules, use_rslora) describing the model's adapters."""
    layers = _require_lora(model)
    ranks = {layer.rank for layer in layers.values()}
    alphas = {layer.alpha for layer in layers.values()}
    rslora = {layer.rslora for layer in layers.values()}
    if len(ranks) > 1 or len(alphas) > 1 or len(rslora) > 1:
        raise ValueError("peft_metadata describes one rank and alpha for all layers; these adapters mix several")
    return {"r": ranks.pop(), "lora_alpha": alphas.pop(), "use_rslora": rslora.pop(),
            "target_modules": sorted(layers), "init_lora_weights": True}


def from_peft_state_dict(state: dict[str, torch.Tensor], part: str = "unet") -> dict[str, torch.Tensor]:
    """Keys of one model's adapter from peft or diffusers renamed to lorakit's ("<module>.lora_A.weight").

    Any layout `lorakit.formats.split_key` reads: the "unet." prefix diffusers writes, peft's
    "base_model.model." prefix and adapter names ("lora_A.default.weight"), the older diffusers names
    "lora.down" / "lora.up". `part` ("unet" or "text_encoder") is the model the keys belong to.
    """
    out = {}
    for key, value in state.items():
        _, module, which = split_key(key, part)
        out[f"{module}.lora_{which}.weight"] = value
    return out
