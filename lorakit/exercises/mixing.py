"""Notebook 05's exercises: the exact (weight-space) mix of two LoRAs, the factor-space mix and its cross terms, and
reading the weight `set_adapters` gave an adapter (the detector for the `cross_attention_kwargs` scale trap)."""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from lorakit.check import never_raises, report
from lorakit.merge import Factors, factor_space_delta, weight_space_delta
from lorakit.seeds import seeded

IN, OUT, RANK = 7, 5, 3  # in != out, so A @ B in place of B @ A fails
SCALES = (2.0, 0.5)  # two different scales alpha / r: a mix that shares one scale shows
TS = (0.3, 0.8)  # no t = 1/2, where swapping the two weights would not show

Mix = Callable[[Factors, Factors, float], torch.Tensor]


def reference_weight_mix(fa: Factors, fb: Factors, t: float) -> torch.Tensor:
    """The exact mix of one layer, (1-t) s_a B_a A_a + t s_b B_b A_b, (out, in): `lorakit.merge.weight_space_delta`."""
    return weight_space_delta({"layer": fa}, {"layer": fb}, t)["layer"]


def reference_factor_mix(fa: Factors, fb: Factors, t: float) -> torch.Tensor:
    """The factor-space mix of one layer, ((1-t) s_a B_a + t s_b B_b)((1-t) A_a + t A_b), (out, in):
    `lorakit.merge.factor_space_delta`."""
    return factor_space_delta({"layer": fa}, {"layer": fb}, t)["layer"]


def reference_adapter_weight(layer: LoraLayer, name: str) -> float:
    """The weight `set_adapters` gave adapter `name` in a peft LoRA layer: its scaling / (alpha / r).

    peft's `set_scale` (which `set_adapters` calls) stores scaling = weight · alpha / r (alpha / sqrt(r) with
    rsLoRA); this reads the weight back.
    """
    r = layer.r[name] ** 0.5 if layer.use_rslora.get(name, False) else layer.r[name]
    return float(layer.scaling[name]) / (layer.lora_alpha[name] / r)


def _factors(seed: int, rank: int = RANK) -> tuple[Factors, Factors]:
    with seeded(seed):
        return tuple(Factors(torch.randn(rank, IN), torch.randn(OUT, rank), s) for s in SCALES)  # A (r, in), B (out, r)


def _run_mix(mix: Mix, fa: Factors, fb: Factors, t: float) -> torch.Tensor | str:
    """The learner's ΔW, or a hint when it is not one (out, in) tensor."""
    try:
        got = mix(fa, fb, t)
    except RuntimeError as err:
        if "shape" in str(err) or "size" in str(err):
            return (f"your code raised {str(err)[:100]!r}: multiply B @ A, (out, r) @ (r, in) -> (out, in); "
                    "A @ B does not fit")
        raise
    if not isinstance(got, torch.Tensor) or got.shape != (OUT, IN):
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return f"return ΔW, one tensor of the layer's weight shape (out, in) = {(OUT, IN)}; got {shape}"
    return got


def _close(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.allclose(got.to(want.dtype), want, atol=1e-5, rtol=1e-5)  # a float64 answer is fine too


@never_raises
def check_weight_mix(mix: Mix) -> bool:
    """Check weight_mix(fa, fb, t) -> the exact mix (1-t) s_a B_a A_a + t s_b B_b A_b of one layer, (out, in)."""
    fa, fb = _factors(11)
    (sa, sb), pa, pb = SCALES, fa.B @ fa.A, fb.B @ fb.A  # the bare products B A, (out, in)
    for t in TS:
        got = _run_mix(mix, fa, fb, t)
        if isinstance(got, str):
            return report(False, got)
        if _close(got, reference_weight_mix(fa, fb, t)):
            continue
        if _close(got, t * sa * pa + (1 - t) * sb * pb):
            return report(False, "the weights are swapped: t = 0 must give adapter a alone, so a gets 1 - t and b gets t")
        if _close(got, (1 - t) * pa + t * pb):
            return report(False, "apply each adapter's scale: ΔW_i = s_i B_i A_i, with s_i = fa.scaling (alpha_i / r_i)")
        if _close(got, (1 - t) * sa ** 2 * pa + t * sb ** 2 * pb):
            return report(False, "each scale is applied twice: Factors.delta() already is s · B @ A, so do not "
                                 "multiply it by .scaling again")
        if any(_close(got, s * ((1 - t) * pa + t * pb)) for s in SCALES):
            return report(False, "each adapter has its own scale: s_a for a's product, s_b for b's (fa.scaling, "
                                 "fb.scaling); one shared scale is right only when the two are equal")
        if _close(got, sa * pa + sb * pb):
            return report(False, "that is both adapters at weight 1, their changes added: blend them with the "
                                 "weights (1 - t) and t")
        if _close(got, reference_factor_mix(fa, fb, t)):
            return report(False, "that is the factor-space mix (exercise 2), with cross terms; the exact mix blends "
                                 "each adapter's whole product s_i B_i A_i, not its factors")
        return report(False, "the exact mix is (1 - t) · s_a B_a A_a + t · s_b B_b A_b: each adapter's ΔW, weighted")
    with seeded(14):
        fb5 = Factors(torch.randn(RANK + 2, IN), torch.randn(OUT, RANK + 2), sb)  # rank 5 against a's 3
    got = _run_mix(mix, fa, fb5, TS[0])
    if isinstance(got, str) or not _close(got, reference_weight_mix(fa, fb5, TS[0])):
        return report(False, "your mix is right for two adapters of one rank, but not for ranks 3 and 5: the exact mix "
                             "adds two (out, in) matrices, so the ranks need not match")
    return report(True, "(1 - t) s_a B_a A_a + t s_b B_b A_b: linear in t, exact, and any two ranks mix")


@never_raises
def check_factor_mix(mix: Mix) -> bool:
    """Check factor_mix(fa, fb, t) -> ((1-t) s_a B_a + t s_b B_b)((1-t) A_a + t A_b), (out, in), lorakit.merge's convention."""
    fa, fb = _factors(12)
    sa, sb = SCALES
    for t in TS:
        got = _run_mix(mix, fa, fb, t)
        if isinstance(got, str):
            return report(False, got)
        if _close(got, reference_factor_mix(fa, fb, t)):
            continue
        a_mix = (1 - t) * fa.A + t * fb.A  # (r, in)
        b_plain = (1 - t) * fa.B + t * fb.B  # (out, r)
        b_mix = (1 - t) * sa * fa.B + t * sb * fb.B  # (out, r)
        if _close(got, (t * sa * fa.B + (1 - t) * sb * fb.B) @ (t * fa.A + (1 - t) * fb.A)):
            return report(False, "the weights are swapped: t = 0 must give adapter a alone, so a's factors get 1 - t")
        if _close(got, reference_weight_mix(fa, fb, t)):
            return report(False, "that is the exact mix (exercise 1); here mix the factors first, A(t) = (1-t) A_a + "
                                 "t A_b and B(t) = (1-t) s_a B_a + t s_b B_b, then multiply B(t) @ A(t)")
        if _close(got, b_plain @ a_mix):
            return report(False, "apply each adapter's scale: put s_a on B_a and s_b on B_b before mixing the B's")
        if _close(got, b_mix @ ((1 - t) * sa * fa.A + t * sb * fb.A)):
            return report(False, "each scale is applied twice, on A and on B: put it on B only, as lorakit.merge does")
        if _close(got, b_plain @ ((1 - t) * sa * fa.A + t * sb * fb.A)):
            return report(False, "the scales are on the A factors; lorakit.merge puts each adapter's scale on its B "
                                 "(B(t) = (1-t) s_a B_a + t s_b B_b), which gives the cross terms s_a B_a A_b + "
                                 "s_b B_b A_a; on A they would get the other adapter's scale")
        if any(_close(got, s * b_plain @ a_mix) for s in SCALES):
            return report(False, "each adapter has its own scale: put s_a on B_a and s_b on B_b inside the mix of "
                                 "B's; one scale outside is right only when the two are equal")
        return report(False, "the factor-space mix is B(t) @ A(t), with A(t) = (1-t) A_a + t A_b and "
                             "B(t) = (1-t) s_a B_a + t s_b B_b")
    t = TS[0]
    cross = t * (1 - t) * (sa * fa.B @ fb.A + sb * fb.B @ fa.A)
    share = float(cross.norm() / reference_weight_mix(fa, fb, t).norm())
    return report(True, f"B(t) A(t) = (1-t)² ΔW_a + t² ΔW_b + t(1-t)(s_a B_a A_b + s_b B_b A_a): quadratic in t; "
                        f"here the cross terms are {share:.0%} of the exact mix's norm at t = {t}")


def _peft_layer() -> LoraLayer:
    """One Linear with two peft adapters of different alpha / r: "a" (alpha 8, r 4: 2) and "b" (alpha 2, r 16: 1/8)."""
    with seeded(13), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*multiple adapters.*")  # two adapters is what is wanted here
        model = nn.Sequential()
        model.add_module("proj", nn.Linear(IN, OUT))
        for name, r, alpha in (("a", 4, 8.0), ("b", 16, 2.0)):
            inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"]), model, adapter_name=name)
    return model.proj


@never_raises
def check_adapter_weight(adapter_weight: Callable[[LoraLayer, str], float]) -> bool:
    """Check adapter_weight(layer, name) -> the weight set_adapters gave the adapter (scaling / (alpha / r))."""
    layer = _peft_layer()
    for weights in ({"a": 1.0, "b": 1.0}, {"a": 0.7, "b": 0.3}, {"a": -0.5, "b": 1.5}):
        for name, w in weights.items():
            layer.set_scale(name, w)  # what pipe.set_adapters(..., adapter_weights=...) does in every layer
        for name, w in weights.items():
            got = adapter_weight(layer, name)
            try:
                got = float(got)
            except (TypeError, ValueError):
                return report(False, f"return one number, the adapter's weight; got {type(got).__name__}")
            if abs(got - w) < 1e-6:
                continue
            other = "b" if name == "a" else "a"
            s, base, base_other = layer.scaling[name], layer.lora_alpha[name] / layer.r[name], \
                layer.lora_alpha[other] / layer.r[other]
            wrong = [(s, "that is layer.scaling, the factor the layer multiplies B A x by: weight · alpha / r; "
                         "divide it by alpha / r to get the weight"),
                     (s * base, "inverted: scaling = weight · alpha / r, so the weight is scaling / (alpha / r) = "
                                "scaling · r / alpha"),
                     (s / base_other, f"that divides by the other adapter's alpha / r: each adapter has its own, "
                                      f"layer.lora_alpha[{name!r}] and layer.r[{name!r}]"),
                     (s / layer.lora_alpha[name], "the base scale is alpha / r, not alpha: divide by "
                                                  "layer.lora_alpha[name] / layer.r[name]"),
                     (s * layer.r[name], "the base scale is alpha / r: divide scaling by alpha / r (you multiplied "
                                         "by r only)")]
            for value, hint in wrong:
                if abs(got - value) < 1e-6:
                    return report(False, hint)
            return report(False, f"adapter {name!r} was set to weight {w}, you read {got:.4g}: the weight is "
                                 "layer.scaling[name] / (layer.lora_alpha[name] / layer.r[name])")
    return report(True, "scaling / (alpha / r): the weight set_adapters set, whatever each adapter's alpha and rank")
