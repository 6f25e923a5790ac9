"""Ways to mix two LoRA adapters, each stated as a formula for the weight change ΔW it makes.

The two adapters live in one pipeline under their names (`pipe.load_lora_weights(path,
adapter_name=...)`). For every adapted layer, adapter i has factors A_i (r, in), B_i (out, r) and
scale s_i = alpha_i / r_i, so its own change is ΔW_i = s_i B_i A_i. A `Mixer` sets the pipeline to
any mix, by one of `METHODS`:

- "set_adapters" (output space, diffusers): both adapters stay separate layers and their outputs
  are added with weights (1-t, t): y = W x + (1-t) s_a B_a A_a x + t s_b B_b A_b x.
- "weight" (weight space): ΔW(t) = (1-t) s_a B_a A_a + t s_b B_b A_b, merged: each adapted layer runs
  as one Linear with W + ΔW(t) (the base weights themselves stay untouched). The exact mix:
  by linearity it equals "set_adapters".
- "factor" (factor space, the pitfall): A(t) = (1-t) A_a + t A_b, B(t) = (1-t) s_a B_a + t s_b B_b,
  ΔW(t) = B(t) A(t), quadratic in t, with cross terms t(1-t)(s_a B_a A_b + s_b B_b A_a).
- "peft_<type>": peft's `LoraModel.add_weighted_adapter(..., combination_type=<type>)` with weights
  (1-t, t), called through peft, merged into W. `linear` and the TIES/DARE/magnitude-prune family
  combine A and B separately with sqrt(weight x scale) factors (cross terms, like "factor"); `cat`
  stacks the factors (exact); `svd` takes the exact ΔW and truncates it to a rank (exact at full rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from peft.tuners.lora import LoraLayer, LoraModel
from torch import nn

from lorakit.seeds import seeded

PEFT_TYPES = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")
METHODS = ("set_adapters", "weight", "factor") + tuple(f"peft_{c}" for c in PEFT_TYPES)
_COMPONENTS = ("unet", "text_encoder")


@dataclass(frozen=True)
class Factors:
    """One adapted layer of one adapter: ΔW = scaling * B @ A."""

    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scaling: float  # alpha / r, as peft and lorakit.lora.LoRALinear call it

    def delta(self) -> torch.Tensor:
        """ΔW = scaling * B A; (out, in)."""
        return self.scaling * self.B @ self.A


def adapted_layers(pipe: StableDiffusionPipeline) -> dict[str, LoraLayer]:
    """Every peft LoRA layer of the UNet and text encoder, keyed "unet.<module>" / "text_encoder.<module>"."""
    return {f"{part}.{name}": module for part in _COMPONENTS
            for name, module in getattr(pipe, part).named_modules() if isinstance(module, LoraLayer)}


def lora_factors(pipe: StableDiffusionPipeline, adapter: str) -> dict[str, Factors]:
    """The factors of one named adapter in every layer it adapts."""
    found = {name: Factors(layer.lora_A[adapter].weight.detach().clone(), layer.lora_B[adapter].weight.detach().clone(),
                           float(layer.scaling[adapter]))
             for name, layer in adapted_layers(pipe).items() if adapter in layer.lora_A}
    if not found:
        names = sorted({a for layer in adapted_layers(pipe).values() for a in layer.lora_A})
        raise KeyError(f"no adapter named {adapter!r} in the pipeline; it has {names or 'none'} "
                       "(load one with pipe.load_lora_weights(path, adapter_name=...))")
    return found


def _check_same_layers(fa: dict[str, Factors], fb: dict[str, Factors]) -> None:
    if fa.keys() != fb.keys():
        only = sorted(fa.keys() ^ fb.keys())
        raise ValueError(f"the two adapters adapt different layers (e.g. {only[:3]}); mix adapters with the same targets")


def weight_space_delta(fa: dict[str, Factors], fb: dict[str, Factors], t: float) -> dict[str, torch.Tensor]:
    """ΔW(t) = (1-t) s_a B_a A_a + t s_b B_b A_b for every layer: the exact linear mix."""
    _check_same_layers(fa, fb)
    return {k: (1 - t) * fa[k].delta() + t * fb[k].delta() for k in fa}


def factor_space_delta(fa: dict[str, Factors], fb: dict[str, Factors], t: float) -> dict[str, torch.Tensor]:
    """ΔW(t) = ((1-t) s_a B_a + t s_b B_b)((1-t) A_a + t A_b): factors interpolated separately (the pitfall)."""
    _check_same_layers(fa, fb)
    out = {}
    for k in fa:
        a, b = fa[k], fb[k]
        if a.A.shape != b.A.shape:
            raise ValueError(f"{k}: factor-space mixing needs equal ranks, got {a.A.shape[0]} and {b.A.shape[0]}")
        out[k] = ((1 - t) * a.scaling * a.B + t * b.scaling * b.B) @ ((1 - t) * a.A + t * b.A)
    return out


def peft_delta(
    fa: dict[str, Factors],
    fb: dict[str, Factors],
    weights: tuple[float, float],
    combination_type: str,
    density: float = 0.5,
    svd_rank: int | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """ΔW of peft's `add_weighted_adapter(["a", "b"], weights, combination_type=...)`, layer by layer.

    peft works on a `LoraModel`; here that model is a bank of bare Linear layers with the adapted
    layers' shapes, holding both adapters' factors, so peft's own code does the combining.
    `density` is used by the TIES/DARE/magnitude-prune types, `svd_rank` by svd (default: the
    larger input rank); `seed` fixes DARE's random drops.
    """
    if combination_type not in PEFT_TYPES:
        raise ValueError(f"unknown combination_type {combination_type!r}; choose from {PEFT_TYPES}")
    _check_same_layers(fa, fb)
    keys = {k: k.replace(".", "__") for k in fa}  # module names may not contain dots
    bank = nn.ModuleDict({keys[k]: nn.Linear(f.A.shape[1], f.B.shape[0], bias=False) for k, f in fa.items()})

    def config(factors: dict[str, Factors]) -> LoraConfig:
        any_f = next(iter(factors.values()))
        r = any_f.A.shape[0]
        return LoraConfig(r=r, lora_alpha=any_f.scaling * r, target_modules=list(keys.values()))

    model = LoraModel(bank, {"a": config(fa)}, "a")
    model.peft_config["b"] = config(fb)
    model.inject_adapter(bank, "b")
    with torch.no_grad():
        for name, factors in (("a", fa), ("b", fb)):
            for k, f in factors.items():
                layer = bank[keys[k]]
                layer.lora_A[name].weight.copy_(f.A)
                layer.lora_B[name].weight.copy_(f.B)
                layer.scaling[name] = f.scaling  # per-layer scales, as in the pipeline
    kwargs = {"density": density} if combination_type not in ("linear", "cat", "svd") else {}
    if combination_type == "svd":
        kwargs["svd_rank"] = svd_rank
    with seeded(seed):
        model.add_weighted_adapter(["a", "b"], list(weights), "mix", combination_type=combination_type, **kwargs)
    return {k: bank[keys[k]].get_delta_weight("mix").detach() for k in fa}


def _finite(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class Mixer:
    """Sets a pipeline holding two named adapters to any mix of them, by any of `METHODS`.

    Merged methods run every adapted layer as one Linear with weight W + ΔW (exactly the base
    layer's cost), with the adapters switched off; "set_adapters" lets diffusers weigh the
    adapters' outputs. The base weights themselves are never written: a merged mix lives in the
    adapted layers only, so `restore()`, `pipe.unload_lora_weights()` and a second Mixer on the
    same pipeline all see the untouched base model. `strength` multiplies the whole mix
    (0 = base model) without losing it.
    """

    def __init__(self, pipe: StableDiffusionPipeline, a: str, b: str) -> None:
        if a == b:
            raise ValueError(f"mix two different adapters; got {a!r} twice")
        self.pipe, self.a, self.b = pipe, a, b
        self.fa, self.fb = lora_factors(pipe, a), lora_factors(pipe, b)
        _check_same_layers(self.fa, self.fb)
        self.layers = {k: v for k, v in adapted_layers(pipe).items() if k in self.fa}
        not_linear = [k for k, v in self.layers.items() if not isinstance(v.get_base_layer(), nn.Linear)]
        if not_linear:
            raise ValueError(f"Mixer mixes adapters on Linear layers; these adapt other layers: {not_linear[:3]}")

    def deltas(self, method: str, t: float) -> dict[str, torch.Tensor]:
        """ΔW of every adapted layer for a method at blend t (weights 1-t and t)."""
        t = _finite("t", t)
        if method in ("weight", "set_adapters"):
            return weight_space_delta(self.fa, self.fb, t)
        if method == "factor":
            return factor_space_delta(self.fa, self.fb, t)
        if method.startswith("peft_") and method[5:] in PEFT_TYPES:
            return peft_delta(self.fa, self.fb, (1 - t, t), method[5:])
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")

    def _run_merged(self, deltas: dict[str, torch.Tensor] | None) -> None:
        """Make each adapted layer compute x (W + ΔW)^T + b in one Linear (None: back to the layer's own forward)."""
        for k, layer in self.layers.items():
            layer.__dict__.pop("forward", None)
            if deltas is not None:
                base = layer.get_base_layer()
                with torch.no_grad():
                    weight = base.weight + deltas[k].to(base.weight)

                def forward(x: torch.Tensor, *args, _w: torch.Tensor = weight, _b=base.bias, **kwargs) -> torch.Tensor:
                    return F.linear(x, _w, _b)

                layer.forward = forward  # an instance attribute: removing the layer removes the mix

    def apply(self, method: str, t: float, strength: float = 1.0) -> None:
        """Set the pipeline to the mix (weights (1-t)·strength and t·strength)."""
        t, strength = _finite("t", t), _finite("strength", strength)
        if method == "set_adapters":
            self._run_merged(None)
            self.pipe.enable_lora()
            self.pipe.set_adapters([self.a, self.b], adapter_weights=[(1 - t) * strength, t * strength])
        else:
            deltas = self.deltas(method, t)
            self.pipe.disable_lora()
            self._run_merged({k: strength * d for k, d in deltas.items()})

    def apply_single(self, adapter: str, scale: float) -> None:
        """One adapter alone at `scale` (negative subtracts it, above 1 extrapolates); the other off."""
        scale = _finite("scale", scale)
        if adapter not in (self.a, self.b):
            raise ValueError(f"adapter must be {self.a!r} or {self.b!r}, got {adapter!r}")
        self._run_merged(None)
        self.pipe.enable_lora()
        self.pipe.set_adapters([adapter], adapter_weights=[scale])

    def restore(self) -> None:
        """The adapted layers' own forward back, both adapters on at weight 1 (as after loading)."""
        self._run_merged(None)
        self.pipe.enable_lora()
        self.pipe.set_adapters([self.a, self.b], adapter_weights=[1.0, 1.0])
