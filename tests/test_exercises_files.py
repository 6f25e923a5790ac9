"""Notebook 06's exercises: each typical mistake gets its own hint (every reference passing, every stub
"not written yet" and the reference handed on: tests/test_exercises.py)."""

import pytest
import torch

from lorakit.exercises import files
from lorakit.formats import to_kohya


def _factors(state):
    """{layer: (down, up, alpha or None)} of a kohya state dict."""
    stems = [k.removesuffix(".lora_down.weight") for k in state if k.endswith(".lora_down.weight")]
    return {s: (state[f"{s}.lora_down.weight"], state[f"{s}.lora_up.weight"], state.get(f"{s}.alpha")) for s in stems}


def _ranks(state):
    return sorted({d.shape[0] for d, _, _ in _factors(state).values()})


@pytest.mark.parametrize("answer, hint", [
    (lambda s: (_ranks(s), sum(v.numel() for v in s.values())), "the 3 .alpha entries"),
    (lambda s: (sorted({u.shape[0] for _, u, _ in _factors(s).values()}), 0), "output widths"),
    (lambda s: (sorted({d.shape[1] for d, _, _ in _factors(s).values()}), 0), "input widths"),
    (lambda s: (_ranks(s), sum(d.numel() for d, _, _ in _factors(s).values())), "both factors"),
    (lambda s: (_ranks(s), sum(u.shape[0] * d.shape[1] for d, u, _ in _factors(s).values())), "full ΔW"),
    (lambda s: _ranks(s), "return two things"),
    (lambda s: (4, 0), "list of ints"),
])
def test_lora_size_mistakes_are_named(answer, hint, capsys):
    assert not files.check_lora_size(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def _scales(state, missing="rank", invert=False, rank_from=lambda d, u: d.shape[0]):
    """Scales alpha / rank with a choice of mistakes: what a missing alpha becomes ("rank", "raise", "skip", a number)."""
    out = set()
    for d, u, a in _factors(state).values():
        rank = rank_from(d, u)
        if a is None:
            if missing == "skip":
                continue
            a = {"rank": rank, "raise": None}.get(missing, missing)
            if a is None:
                raise KeyError("alpha")
        out.add(rank / float(a) if invert else float(a) / rank)
    return sorted(out)


def test_the_scale_helper_is_the_reference():
    assert files.check_file_scales(_scales)


@pytest.mark.parametrize("answer, hint", [
    (lambda s: sorted({float(a) for _, _, a in _factors(s).values() if a is not None}), "those are the alphas"),
    (lambda s: _scales(s, invert=True), "inverted"),
    (lambda s: _scales(s, rank_from=lambda d, u: u.shape[0]), "output width"),
    (lambda s: _scales(s, rank_from=lambda d, u: d.shape[1]), "not its second"),
    (lambda s: _scales(s, missing="raise"), "raised KeyError"),
    (lambda s: _scales(s, missing=1.0), "kohya's training default"),
    (lambda s: _scales(s, missing="skip"), "still loaded"),
    (lambda s: _scales(s, missing=0.0), "still loaded"),
    (lambda s: _scales(s, missing="skip") if any(k.endswith(".alpha") for k in s) else [1.0], "decide per layer"),
    (lambda s: _scales(s, missing="raise") if any(k.endswith(".alpha") for k in s) else [1.0], "decide per layer"),
    (lambda s: {"layer": 2.0}, "sorted list of numbers"),
])
def test_file_scales_mistakes_are_named(answer, hint, capsys):
    assert not files.check_file_scales(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out


def _convert(state, alpha, te="lora_te_text_model_", swap=False, dots=False, alpha_value=None, unet="lora_unet_"):
    """A hand-written conversion with a choice of mistakes."""
    out = {}
    for key, value in state.items():
        module, _, factor = key.rpartition(".lora_")
        part, _, path = module.partition(".")
        layer = {"unet": unet, "text_encoder": te}[part] + (path if dots else path.replace(".", "_"))
        down = factor.startswith("A") != swap
        out[f"{layer}.lora_{'down' if down else 'up'}.weight"] = value
        if alpha_value != "none":
            out[f"{layer}.alpha"] = torch.tensor(float(alpha)) if alpha_value is None else alpha_value
    return out


def test_the_conversion_helper_without_mistakes_passes():
    assert files.check_to_kohya(_convert)


@pytest.mark.parametrize("answer, hint", [
    (lambda s, a: _convert(s, a, alpha_value="none"), "no .alpha keys"),
    (lambda s, a: _convert(s, a, alpha_value=torch.tensor(4.0)), "wrote the rank as alpha"),
    (lambda s, a: _convert(s, a, alpha_value=a), "safetensors stores tensors only"),
    (lambda s, a: _convert(s, a, alpha_value=torch.tensor([a, a])), "one number per layer"),
    (lambda s, a: _convert(s, a, alpha_value=torch.tensor(1.0)), "write the adapter's alpha"),
    (lambda s, a: _convert(s, a, te="lora_te_"), "text_model"),
    (lambda s, a: _convert(s, a, swap=True), "swapped"),
    (lambda s, a: _convert(s, a, dots=True), "no dots"),
    (lambda s, a: _convert(s, a, unet="unet_"), "the prefixes"),
    (lambda s, a: {k.replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v for k, v in to_kohya(s, a).items()},
     "'.lora_down.weight' (A)"),
    (lambda s, a: {k: (v.T if k.endswith("lora_up.weight") else v) for k, v in to_kohya(s, a).items()}, "transposed"),
    (lambda s, a: {k: (2 * v if k.endswith("lora_up.weight") else v) for k, v in to_kohya(s, a).items()},
     "copy the tensor unchanged"),
    (lambda s, a: [], "return a dict"),
])
def test_to_kohya_mistakes_are_named(answer, hint, capsys):
    assert not files.check_to_kohya(answer)
    out = capsys.readouterr().out
    assert hint in out and "Traceback" not in out
