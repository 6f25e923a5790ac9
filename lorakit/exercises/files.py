"""Notebook 06's exercises: a kohya file's ranks and parameter count, the scale alpha / rank it applies (alpha missing:
alpha = rank, the trap), and writing kohya keys that keep alpha."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from lorakit.check import never_raises, report
from lorakit.formats import LoraInfo, inspect_lora, to_kohya
from lorakit.seeds import seeded

Tensors = dict[str, torch.Tensor]
_ENDINGS = (".lora_down.weight", ".lora_up.weight", ".alpha")
# three layers of SD 1.5's names (diffusers' converter reads them), each with its own (rank, in, out, alpha)
_LAYERS = {
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (4, 32, 32, 8.0),
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k": (8, 64, 96, 1),  # kohya's network_alpha 1
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (2, 64, 64, 2.0),
}


def _kohya_state(seed: int, with_alpha: set[str] | None = None) -> Tensors:
    """A small kohya state dict of `_LAYERS`; `with_alpha`: the layers that keep their .alpha key (default all)."""
    state = {}
    with seeded(seed):
        for stem, (r, fan_in, fan_out, alpha) in _LAYERS.items():
            state[f"{stem}.lora_down.weight"] = torch.randn(r, fan_in)  # A (r, in)
            state[f"{stem}.lora_up.weight"] = torch.randn(fan_out, r)  # B (out, r)
            if with_alpha is None or stem in with_alpha:
                state[f"{stem}.alpha"] = torch.tensor(alpha)  # an int stays int64, as diffusers' converter writes it
    return state


def _inspect(state: Tensors) -> LoraInfo:
    """`lorakit.formats.inspect_lora` on a state dict (written to a temporary safetensors file, then read back)."""
    with tempfile.TemporaryDirectory(prefix="lorakit-exercise-") as folder:
        path = Path(folder) / "lora.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return inspect_lora(path)


def reference_lora_size(state: Tensors) -> tuple[list[int], int]:
    """(the distinct ranks, sorted; the number of trained parameters) of a kohya state dict, as `inspect_lora` reads them."""
    info = _inspect(state)
    return sorted(set(info.ranks.values())), info.n_params


def reference_file_scales(state: Tensors) -> list[float]:
    """The distinct scales alpha / rank a kohya state dict applies, sorted; a layer without .alpha: alpha = rank."""
    return sorted(set(_inspect(state).scales.values()))


def reference_to_kohya(peft_state: Tensors, alpha: float) -> Tensors:
    """peft keys ("unet.<module>.lora_A.weight") to kohya keys with an .alpha per layer: `lorakit.formats.to_kohya`."""
    return to_kohya(peft_state, alpha)


def _layer_sizes(state: Tensors) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    stems = [k.removesuffix(".lora_down.weight") for k in state if k.endswith(".lora_down.weight")]
    return {s: (state[f"{s}.lora_down.weight"], state[f"{s}.lora_up.weight"], state.get(f"{s}.alpha")) for s in stems}


def _numbers(values: object, kind: type) -> list | None:
    """The learner's numbers as a sorted list of distinct `kind`s (any iterable of numbers or 0-d tensors), or None."""
    try:
        return sorted({kind(v.item() if isinstance(v, torch.Tensor) else v) for v in values})
    except (TypeError, ValueError, RuntimeError):
        return None


@never_raises
def check_lora_size(lora_size: Callable[[Tensors], tuple[list[int], int]]) -> bool:
    """Check lora_size(state) -> (sorted distinct ranks, number of parameters) of a kohya state dict."""
    state = _kohya_state(21)
    want_ranks, want_n = reference_lora_size(state)
    got = lora_size(state)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return report(False, f"return two things, (ranks, parameters), e.g. ({want_ranks}, {want_n}); got {got!r:.80}")
    ranks, n = None if isinstance(got[0], (int, torch.Tensor)) else _numbers(got[0], int), got[1]
    if ranks is None:
        return report(False, f"return the ranks as a list of ints, e.g. {want_ranks} (one per distinct rank), "
                             f"got {got[0]!r:.60}")
    try:
        n = int(n)
    except (TypeError, ValueError, RuntimeError):
        return report(False, f"the parameter count must be one whole number; got {n!r:.60}")
    layers = _layer_sizes(state)
    if ranks != want_ranks:
        if ranks == sorted({up.shape[0] for _, up, _ in layers.values()}):
            return report(False, "those are the output widths: lora_up is B, (out, r); the rank is lora_down's first "
                                 "dimension, A (r, in) (or lora_up's second)")
        if ranks == sorted({down.shape[1] for down, _, _ in layers.values()}):
            return report(False, "those are the input widths: lora_down is A, (r, in); the rank is its first dimension")
        return report(False, f"the ranks are {want_ranks}, read from each lora_down weight's first dimension "
                             f"(A is (r, in)); got {ranks}")
    n_alpha = sum(1 for k in state if k.endswith(".alpha"))
    if n == want_n:
        return report(True, f"ranks {want_ranks}, {want_n:,} parameters: r · (in + out) per layer, as inspect_lora "
                            "reports them")
    if n == want_n + n_alpha:
        return report(False, f"you counted the {n_alpha} .alpha entries: alpha is a setting, not a trained parameter; "
                             "count the lora_down and lora_up weights only")
    if n in (sum(d.numel() for d, _, _ in layers.values()), sum(u.numel() for _, u, _ in layers.values())):
        return report(False, "count both factors of every layer: lora_down (A, r · in) and lora_up (B, out · r)")
    if n == sum(u.shape[0] * d.shape[1] for d, u, _ in layers.values()):
        return report(False, "that is the size of the full ΔW = B A (out · in per layer), what the LoRA saves you "
                             "from storing; the file holds r · (in + out) per layer")
    return report(False, f"the file holds {want_n:,} parameters (every lora_down and lora_up weight's numel); got {n:,}")


@never_raises
def check_file_scales(file_scales: Callable[[Tensors], list[float]]) -> bool:
    """Check file_scales(state) -> the sorted distinct scales alpha / rank of a kohya state dict (no alpha: alpha = rank)."""
    full = _kohya_state(22)
    want = reference_file_scales(full)  # [0.125, 1.0, 2.0]
    got = _numbers(file_scales(full), float)
    if got is None:
        return report(False, f"return the distinct scales as a sorted list of numbers, e.g. {want}")
    layers = _layer_sizes(full)
    if not _same(got, want):
        variants = [
            (lambda d, u, a: float(a), "those are the alphas; the scale is alpha / rank"),
            (lambda d, u, a: d.shape[0] / float(a), "inverted: the scale is alpha / rank, not rank / alpha"),
            (lambda d, u, a: float(a) / u.shape[0], "the rank is lora_down's first dimension (A is (r, in)); "
                                                    "lora_up's first is the output width"),
            (lambda d, u, a: float(a) / d.shape[1], "the rank is lora_down's first dimension (A is (r, in)), "
                                                    "not its second"),
        ]
        for wrong, hint in variants:
            if _same(got, sorted({wrong(*layer) for layer in layers.values()})):
                return report(False, hint)
        return report(False, f"the scales of this file are {want} (alpha / rank per layer, rank = lora_down's first "
                             f"dimension); got {got}")
    bare = _kohya_state(22, with_alpha=set())
    try:
        got = _numbers(file_scales(bare), float)
    except KeyError as err:
        return report(False, f"a file without .alpha keys raised KeyError {err}: such files are common (the trap), and "
                             "loaders then take alpha = rank, scale 1; use state.get(stem + '.alpha')")
    if got == [1.0]:
        mixed = _kohya_state(23, with_alpha={next(iter(_LAYERS))})  # one layer keeps its alpha
        try:
            got_mixed = _numbers(file_scales(mixed), float)
        except KeyError:
            got_mixed = None
        if _same(got_mixed or [], reference_file_scales(mixed)):
            return report(True, f"{want}: alpha / rank per layer, and scale 1 where .alpha is missing (alpha = rank), "
                                "as stock diffusers loads it")
        return report(False, "right for a file with every .alpha and for one without any, but not when only some "
                             "layers have one: decide per layer (alpha = rank where that layer's .alpha is missing)")
    if _same(got or [], sorted({1 / d.shape[0] for d, _, _ in layers.values()})):
        return report(False, "without .alpha you took alpha = 1 (kohya's training default network_alpha); a loader "
                             "that finds no .alpha takes alpha = rank: scale 1")
    if not got or 0.0 in got:
        return report(False, "a layer without .alpha is still loaded, at alpha = rank: its scale is 1, not missing or 0")
    return report(False, f"for a file without .alpha keys the scale is [1.0] (alpha = rank); got {got}")


def _same(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(g - w) < 1e-6 for g, w in zip(got, want))


def _peft_state(seed: int, rank: int = 4) -> Tensors:
    """A small peft-style state dict: two UNet layers and one text-encoder layer named as transformers 5 does (no text_model.)."""
    modules = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32),
               "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0": (64, 96),
               "text_encoder.encoder.layers.0.self_attn.q_proj": (64, 48)}
    with seeded(seed):
        return {k: v for m, (fan_in, fan_out) in modules.items()
                for k, v in ((f"{m}.lora_A.weight", torch.randn(rank, fan_in)),  # (r, in)
                             (f"{m}.lora_B.weight", torch.randn(fan_out, rank)))}  # (out, r)


def _stem(key: str) -> str:
    return next((key[: -len(e)] for e in _ENDINGS if key.endswith(e)), key)


@never_raises
def check_to_kohya(convert: Callable[[Tensors, float], Tensors]) -> bool:
    """Check convert(peft_state, alpha) -> kohya keys: lora_down (A), lora_up (B) and a scalar .alpha per layer."""
    rank, alpha = 4, 8.0  # alpha != rank, as the notebook's adapter: a lost alpha shows
    peft_state = _peft_state(24, rank)
    want = reference_to_kohya(peft_state, alpha)
    got = convert(dict(peft_state), alpha)
    if not isinstance(got, dict) or not got:
        return report(False, f"return a dict of kohya keys to tensors, e.g. {{{next(iter(want))!r}: ...}}")
    if set(got) != set(want):
        keys, example = sorted(got), sorted(k for k in want if k.startswith("lora_unet_"))[1]
        if any(".lora_A" in k or ".lora_B" in k for k in keys):
            return report(False, "kohya names the factors '.lora_down.weight' (A) and '.lora_up.weight' (B), after the "
                                 f"layer's name: e.g. {example!r}")
        if not any(k.endswith(".alpha") for k in keys) and set(got) == {k for k in want if not k.endswith(".alpha")}:
            return report(False, "no .alpha keys: a kohya file without alpha loads with alpha = rank, scale 1 instead "
                                 f"of {alpha / rank:g} (the trap); add '<layer>.alpha' = torch.tensor(alpha) per layer")
        if any("." in _stem(k) for k in keys):
            return report(False, "kohya layer names have no dots: 'unet.down_blocks.0...to_q' becomes "
                                 "'lora_unet_down_blocks_0_..._to_q' (every '.' of the module path is a '_')")
        te_want = sorted({_stem(k) for k in want if k.startswith("lora_te_")})
        te_got = sorted({_stem(k) for k in keys if "q_proj" in k})
        if te_got and te_got != te_want and te_got[0].replace("lora_te_", "lora_te_text_model_") == te_want[0]:
            return report(False, "kohya names CLIP's layers from 'text_model' (SD 1.5's CLIPTextModel): "
                                 f"'text_encoder.encoder.layers...' becomes {te_want[0]!r}; add 'text_model_' "
                                 "after 'lora_te_' when the module path lacks it")
        if not all(k.startswith(("lora_unet_", "lora_te_")) for k in keys):
            return report(False, "the prefixes: 'unet.<module>' becomes 'lora_unet_<module>', 'text_encoder.<module>' "
                                 f"'lora_te_text_model_<module>' (dots as '_'); e.g. {example!r}; got e.g. "
                                 f"{sorted(set(got) - set(want))[0]!r}")
        missing = sorted(set(want) - set(got))
        return report(False, f"{len(missing)} expected keys are missing, e.g. {missing[0]!r}; got e.g. "
                             f"{sorted(set(got) - set(want) or got)[0]!r}")
    for key, value in want.items():
        mine = got[key]
        if key.endswith(".alpha"):
            if not isinstance(mine, torch.Tensor):
                return report(False, f"{key} is a {type(mine).__name__}: safetensors stores tensors only, "
                                     "write torch.tensor(float(alpha))")
            if mine.numel() != 1:
                return report(False, f"{key} holds {mine.numel()} numbers; alpha is one number per layer, a 0-d tensor")
            if float(mine) == rank and alpha != rank:
                return report(False, "you wrote the rank as alpha, as diffusers' convert_state_dict_to_kohya does: the "
                                     f"adapter was trained with alpha {alpha:g}, so it would load at scale 1 instead of "
                                     f"{alpha / rank:g}; write the alpha you are given")
            if float(mine) != float(value):
                return report(False, f"{key} is {float(mine):g}; write the adapter's alpha, {alpha:g}")
            continue
        if not isinstance(mine, torch.Tensor):
            return report(False, f"{key} is a {type(mine).__name__}; store the factor's tensor")
        up = want[f"{_stem(key)}.lora_up.weight"]
        if key.endswith(".lora_down.weight") and mine.shape == up.shape and torch.equal(mine, up):
            return report(False, "lora_down and lora_up are swapped: lora_down is A (r, in), applied first to x; "
                                 "lora_up is B (out, r)")
        if mine.shape == value.T.shape and torch.equal(mine, value.T):
            return report(False, f"{key} is transposed: kohya keeps peft's shapes, lora_down (r, in) and lora_up "
                                 "(out, r); store the tensors as they are")
        if not torch.equal(mine, value):
            return report(False, f"{key} holds other numbers than the peft factor it comes from "
                                 f"({'A' if key.endswith('down.weight') else 'B'}); copy the tensor unchanged")
    return report(True, f"{len(want) // 3} layers as kohya keys, each with lora_down, lora_up and its alpha "
                        f"({alpha:g}, scale {alpha / rank:g}): A1111, ComfyUI and diffusers load it at full strength")
