"""Notebook 05's exercises: each typical mistake gets its own hint (every reference passing, every stub
"not written yet" and the reference handed on: tests/test_exercises.py)."""

import pytest
import torch

from lorakit.exercises import mixing
from lorakit.merge import Factors


def _delta(f: Factors) -> torch.Tensor:
    return f.scaling * f.B @ f.A


@pytest.mark.parametrize("answer, hint", [
    (lambda a, b, t: t * _delta(a) + (1 - t) * _delta(b), "swapped"),
    (lambda a, b, t: (1 - t) * a.B @ a.A + t * b.B @ b.A, "apply each adapter's scale"),
    (lambda a, b, t: (1 - t) * a.scaling * a.delta() + t * b.scaling * b.delta(), "applied twice"),
    (lambda a, b, t: a.scaling * ((1 - t) * a.B @ a.A + t * b.B @ b.A), "its own scale"),
    (lambda a, b, t: a.delta() + b.delta(), "both adapters at weight 1"),
    (mixing.reference_factor_mix, "factor-space mix"),
    (lambda a, b, t: (1 - t) * a.scaling * a.A @ a.B + t * b.scaling * b.A @ b.B, "B @ A"),
    (lambda a, b, t: (1 - t) * a.delta()[:, :3] + t * b.delta()[:, :3], "(out, in)"),
])
def test_weight_mix_mistakes_are_named(answer, hint, capsys):
    assert not mixing.check_weight_mix(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def _b_mix(a: Factors, b: Factors, t: float, scaled: bool = True) -> torch.Tensor:
    return (1 - t) * (a.scaling if scaled else 1) * a.B + t * (b.scaling if scaled else 1) * b.B  # (out, r)


def _a_mix(a: Factors, b: Factors, t: float, scaled: bool = False) -> torch.Tensor:
    return (1 - t) * (a.scaling if scaled else 1) * a.A + t * (b.scaling if scaled else 1) * b.A  # (r, in)


@pytest.mark.parametrize("answer, hint", [
    (lambda a, b, t: _b_mix(a, b, 1 - t) @ _a_mix(a, b, 1 - t), "swapped"),
    (mixing.reference_weight_mix, "exact mix (exercise 1)"),
    (lambda a, b, t: _b_mix(a, b, t, scaled=False) @ _a_mix(a, b, t), "apply each adapter's scale"),
    (lambda a, b, t: _b_mix(a, b, t) @ _a_mix(a, b, t, scaled=True), "applied twice"),
    (lambda a, b, t: _b_mix(a, b, t, scaled=False) @ _a_mix(a, b, t, scaled=True), "on the A factors"),
    (lambda a, b, t: a.scaling * _b_mix(a, b, t, scaled=False) @ _a_mix(a, b, t), "its own scale"),
    (lambda a, b, t: _a_mix(a, b, t) @ _b_mix(a, b, t), "B @ A"),
])
def test_factor_mix_mistakes_are_named(answer, hint, capsys):
    assert not mixing.check_factor_mix(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


@pytest.mark.parametrize("answer, hint", [
    (lambda layer, n: layer.scaling[n], "that is layer.scaling"),
    (lambda layer, n: layer.scaling[n] * layer.lora_alpha[n] / layer.r[n], "inverted"),
    (lambda layer, n: layer.scaling[n] / (layer.lora_alpha["a"] / layer.r["a"]), "the other adapter's"),
    (lambda layer, n: layer.scaling[n] / layer.lora_alpha[n], "not alpha"),
    (lambda layer, n: layer.scaling[n] * layer.r[n], "multiplied by r only"),
    (lambda layer, n: {n: 1.0}, "return one number"),
])
def test_adapter_weight_mistakes_are_named(answer, hint, capsys):
    assert not mixing.check_adapter_weight(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def test_the_references_are_the_kits_mixes_and_read_rslora_too():
    """The one-layer references give lorakit.merge's deltas; the weight reader follows peft's rsLoRA scale too."""
    from peft import LoraConfig, inject_adapter_in_model
    from torch import nn

    fa, fb = mixing._factors(0)
    assert torch.equal(mixing.reference_weight_mix(fa, fb, 0.3), 0.7 * fa.delta() + 0.3 * fb.delta())
    model = nn.Sequential()
    model.add_module("proj", nn.Linear(6, 5))
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["proj"]), model)
    model.proj.set_scale("default", 0.25)
    assert mixing.reference_adapter_weight(model.proj, "default") == pytest.approx(0.25)
