"""LoRA files as people share them: diffusers/peft and kohya (A1111, ComfyUI). Convert, save, load, inspect.

Two layouts of the same numbers, for every adapted layer (A: (r, in), B: (out, r)):

- diffusers/peft (`pytorch_lora_weights.safetensors`, written by `save_lora_weights`):
  "unet.<module>.lora.down.weight" (or peft's "<module>.lora_A.weight"), "text_encoder.<module>
  .lora_linear_layer.down.weight"; alpha lives in the file's metadata (the LoraConfig), or nowhere.
- kohya: "lora_unet_<module with _>.lora_down.weight", ".lora_up.weight", ".alpha" (a scalar
  tensor per layer); text encoder "lora_te_text_model_<module with _>...".

The trap this module exists for: alpha. A file without it loads with alpha = rank (diffusers issue
#6087), so an adapter trained with alpha != rank silently changes strength. Every path here keeps
alpha. diffusers reads kohya files itself (`pipe.load_lora_weights`), so loading goes through its
converter; only the writing side is written here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lorakit.paths import atomic_path

FORMATS = ("diffusers", "kohya")
_PARTS = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_")  # diffusers' convert_state_dict_to_kohya writes lora_te1_
# key endings of the layouts in the wild -> "A" (down) or "B" (up)
_ENDINGS = {
    ".lora_A.weight": "A", ".lora_B.weight": "B",  # peft
    ".lora.down.weight": "A", ".lora.up.weight": "B",  # diffusers UNet
    ".lora_linear_layer.down.weight": "A", ".lora_linear_layer.up.weight": "B",  # diffusers text encoder
}
_LEGACY = re.compile(r"(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$")  # diffusers' kohya converter


class LoraFileError(ValueError):
    """A file that is not a usable LoRA file, with what was wrong and how to fix it."""


@dataclass
class LoraInfo:
    """What a LoRA file holds. Module names are "unet.<module>" / "text_encoder.<module>"."""

    path: Path
    format: str  # "diffusers" or "kohya"
    ranks: dict[str, int]
    alphas: dict[str, float]
    n_params: int
    file_bytes: int
    alpha_from: str  # where alpha came from: ".alpha keys", "file metadata", or "missing: alpha = rank assumed"
    problems: list[str] = field(default_factory=list)  # mismatches with the pipeline given to inspect_lora

    @property
    def scales(self) -> dict[str, float]:
        """alpha / rank per module: the factor the LoRA's output is multiplied by."""
        return {m: self.alphas[m] / r for m, r in self.ranks.items()}

    @property
    def targets(self) -> list[str]:
        """The kinds of base layers adapted (the modules' last names, e.g. "to_q", "q_proj")."""
        return sorted({m.rsplit(".", 1)[-1] if not m.endswith(".0") else m.rsplit(".", 2)[-2] + ".0"
                       for m in self.ranks})

    def report(self) -> str:
        """A short human-readable summary."""
        parts = {p: sum(1 for m in self.ranks if m.startswith(p + ".")) for p in _PARTS}
        lines = [f"{self.path.name}: {self.format} format, {self.file_bytes / 1024:.0f} KiB, {self.n_params:,} parameters",
                 f"  layers: {parts['unet']} in the UNet, {parts['text_encoder']} in the text encoder; targets {self.targets}",
                 f"  rank {sorted(set(self.ranks.values()))}, alpha {sorted(set(self.alphas.values()))} "
                 f"({self.alpha_from}), scale {sorted(set(round(s, 4) for s in self.scales.values()))}"]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


def _split(key: str) -> tuple[str, str, str]:
    """(part, module, "A"|"B") of a diffusers/peft key, e.g. ("unet", "down_blocks.0...to_q", "A")."""
    part, _, rest = key.partition(".")
    if part not in _PARTS:
        raise LoraFileError(f"key {key!r} does not start with 'unet.' or 'text_encoder.': prefix peft keys with the "
                            "component they belong to (diffusers does this in save_lora_weights)")
    for ending, which in _ENDINGS.items():
        if rest.endswith(ending):
            return part, rest[: -len(ending)], which
    legacy = _LEGACY.search(rest)
    if legacy:
        proj, which = legacy.group(1), "A" if legacy.group(2) == "down" else "B"
        name = rest[: legacy.start()]
        module = f"{name}.{proj}" if proj != "to_out" else f"{name}.to_out.0"
        if part == "text_encoder":
            module = f"{name}.{proj[3:]}_proj"  # CLIP names: q_proj, k_proj, v_proj, out_proj
        return part, module, which
    raise LoraFileError(f"key {key!r} is not a LoRA weight (expected endings like '.lora_A.weight', "
                        "'.lora.down.weight', '.lora_linear_layer.down.weight')")


def _factors(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"unet.<module>": {"A": ..., "B": ...}} from a diffusers/peft state dict."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        part, module, which = _split(key)
        out.setdefault(f"{part}.{module}", {})[which] = value
    incomplete = [m for m, f in out.items() if set(f) != {"A", "B"}]
    if incomplete:
        raise LoraFileError(f"layers with only one factor (A/down or B/up missing): {incomplete[:3]}")
    return out


def peft_layout(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """A diffusers/peft LoRA state dict split per component, keys as peft's set_peft_model_state_dict takes them.

    {"unet": {"<module>.lora_A.weight": ..., "<module>.lora_B.weight": ...}, "text_encoder": {...}}
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    for module, f in _factors(state).items():
        part, _, name = module.partition(".")
        out.setdefault(part, {}).update({f"{name}.lora_A.weight": f["A"], f"{name}.lora_B.weight": f["B"]})
    return out


def _kohya_name(module: str) -> str:
    part, _, path = module.partition(".")
    if part == "text_encoder" and not path.startswith("text_model."):
        path = "text_model." + path  # kohya names CLIP's layers from text_model (SD 1.5's CLIPTextModel)
    return _PARTS[part] + path.replace(".", "_")


def to_kohya(peft_state_dict: dict[str, torch.Tensor], alpha: float | dict[str, float]) -> dict[str, torch.Tensor]:
    """diffusers/peft keys to kohya keys, with an ".alpha" per layer (a float for all, or per "unet.<module>")."""
    out = {}
    for module, f in _factors(peft_state_dict).items():
        a = alpha.get(module) if isinstance(alpha, dict) else alpha
        if a is None:
            raise LoraFileError(f"no alpha given for {module}; pass alpha for every module (or one float for all)")
        name = _kohya_name(module)
        out[f"{name}.lora_down.weight"] = f["A"].contiguous()
        out[f"{name}.lora_up.weight"] = f["B"].contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(a))
    return out


def from_kohya(kohya_state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """kohya keys to peft-style keys ("unet.<module>.lora_A.weight") and alphas per "unet.<module>".

    The key conversion is diffusers' own (`StableDiffusionPipeline.lora_state_dict`); its legacy
    attention-processor names are then renamed to the installed models' module names.
    """
    if not any(k.startswith(_KOHYA_PREFIXES) for k in kohya_state_dict):
        raise LoraFileError("not a kohya LoRA: no key starts with 'lora_unet_' or 'lora_te_'")
    state, network_alphas = StableDiffusionPipeline.lora_state_dict(dict(kohya_state_dict))
    peft_state, alphas = {}, {}
    for key, value in state.items():
        part, module, which = _split(key)
        peft_state[f"{part}.{_model_name(part, module)}.lora_{which}.weight"] = value
    for key, value in (network_alphas or {}).items():
        stem = key.removesuffix(".alpha")
        try:  # text-encoder alphas are named after a weight, UNet alphas after their module
            part, module, _ = _split(stem)
        except LoraFileError:
            part, _, module = stem.partition(".")
        alphas[f"{part}.{_model_name(part, module)}"] = float(value)
    return peft_state, alphas


def _model_name(part: str, module: str) -> str:
    """Module names as the installed models spell them: transformers 5's CLIPTextModel has no "text_model."."""
    return module.removeprefix("text_model.") if part == "text_encoder" else module


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise LoraFileError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err


def _detect(state: dict[str, torch.Tensor], path: Path) -> str:
    keys = list(state)
    if keys and all(k.startswith(_KOHYA_PREFIXES) for k in keys):
        return "kohya"
    if keys and all(k.startswith(tuple(p + "." for p in _PARTS)) and "lora" in k for k in keys):
        return "diffusers"
    raise LoraFileError(f"{path.name} holds no LoRA weights in a known layout (keys such as {keys[:3]}); "
                        "expected 'unet.<module>.lora.down.weight' (diffusers) or 'lora_unet_<module>.lora_down.weight' (kohya)")


def _metadata_alphas(metadata: dict[str, str], modules: list[str]) -> dict[str, float] | None:
    """Alphas from the LoraConfig diffusers stores as "lora_adapter_metadata" ({"unet.lora_alpha": ...})."""
    raw = metadata.get("lora_adapter_metadata")
    if raw is None:
        return None
    flat = json.loads(raw)
    alphas = {}
    for module in modules:
        part, _, name = module.partition(".")
        if f"{part}.lora_alpha" not in flat:
            return None
        alphas[module] = float((flat.get(f"{part}.alpha_pattern") or {}).get(name, flat[f"{part}.lora_alpha"]))
    return alphas


def _diffusers_alphas(metadata: dict[str, str], factors: dict[str, dict[str, torch.Tensor]]) -> tuple[dict[str, float], str]:
    try:
        found = _metadata_alphas(metadata, list(factors))
    except (ValueError, KeyError, TypeError):
        found = None
    if found is not None:
        return found, "file metadata"
    return {m: float(f["A"].shape[0]) for m, f in factors.items()}, "missing: alpha = rank assumed"


def load_lora(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a LoRA file of either format; returns a kohya-layout dict that `pipe.load_lora_weights` takes.

    The kohya layout is returned because it is the one dict layout in which stock diffusers reads
    alpha from the dict itself, so `pipe.load_lora_weights(load_lora(path))` reproduces the adapter,
    alpha != rank included. A diffusers file's alpha comes from its metadata. Never writes anything.
    """
    path = Path(path)
    state, metadata = _read(path)
    if _detect(state, path) == "kohya":
        return state
    factors = _factors(state)
    alphas, _ = _diffusers_alphas(metadata, factors)
    return to_kohya(state, alphas)


def save_lora(state_dict: dict[str, torch.Tensor], path: str | Path, format: str = "diffusers",
              alpha: float | dict[str, float] | None = None) -> Path:
    """Write a LoRA (diffusers/peft keys, or kohya keys with .alpha) as `format`, atomically, alpha kept.

    A diffusers/peft dict carries no alpha: pass `alpha` (one float, or per "unet.<module>"); a kohya
    dict brings its own. A diffusers file stores alpha in the metadata diffusers reads back
    (`unet_lora_adapter_metadata`), with an alpha_pattern where layers differ.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if any(k.startswith(_KOHYA_PREFIXES) for k in state_dict):  # kohya in
        peft_state, alphas = from_kohya(state_dict)
    else:
        if alpha is None:
            raise ValueError("this state dict has no alpha: pass alpha= (the LoRA's scale is alpha / rank); "
                             "without it every loader assumes alpha = rank")
        peft_state = state_dict
        alphas = alpha if isinstance(alpha, dict) else {m: float(alpha) for m in _factors(state_dict)}
    factors = _factors(peft_state)
    if format == "kohya":
        with atomic_path(path) as tmp:
            save_file(to_kohya(peft_state, alphas), str(tmp), metadata={"ss_network_module": "networks.lora"})
        return path
    layers, metadata = {}, {}
    for part in _PARTS:
        mods = {m.partition(".")[2]: f for m, f in factors.items() if m.startswith(part + ".")}
        if not mods:
            continue
        layers[part] = {f"{m}.lora_A.weight": f["A"] for m, f in mods.items()} | \
            {f"{m}.lora_B.weight": f["B"] for m, f in mods.items()}
        ranks = {m: f["A"].shape[0] for m, f in mods.items()}
        part_alphas = {m: alphas[f"{part}.{m}"] for m in mods}
        common = max(set(part_alphas.values()), key=list(part_alphas.values()).count)
        metadata[part] = {"r": max(ranks.values()), "lora_alpha": common, "target_modules": sorted(mods),
                          "rank_pattern": {m: r for m, r in ranks.items() if r != max(ranks.values())},
                          "alpha_pattern": {m: a for m, a in part_alphas.items() if a != common}}
    with atomic_path(path) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp.parent, unet_lora_layers=layers.get("unet"), text_encoder_lora_layers=layers.get("text_encoder"),
            unet_lora_adapter_metadata=metadata.get("unet"), text_encoder_lora_adapter_metadata=metadata.get("text_encoder"),
            weight_name=tmp.name, safe_serialization=True)
    return path


def inspect_lora(path: str | Path, pipe: StableDiffusionPipeline | None = None) -> LoraInfo:
    """Rank, alpha and scale per module, targets, parameters and size; with `pipe`, what does not fit it."""
    path = Path(path)
    state, metadata = _read(path)
    fmt = _detect(state, path)
    if fmt == "kohya":
        peft_state, alphas = from_kohya(state)
        factors = _factors(peft_state)
        alpha_from = ".alpha keys" if alphas else "missing: alpha = rank assumed"
        alphas = {m: alphas.get(m, float(f["A"].shape[0])) for m, f in factors.items()}
    else:
        factors = _factors(state)
        alphas, alpha_from = _diffusers_alphas(metadata, factors)
    info = LoraInfo(path, fmt, {m: int(f["A"].shape[0]) for m, f in factors.items()}, alphas,
                    sum(v.numel() for f in factors.values() for v in f.values()), path.stat().st_size, alpha_from)
    if pipe is not None:
        info.problems = _fit_problems(factors, pipe)
    return info


def _fit_problems(factors: dict[str, dict[str, torch.Tensor]], pipe: StableDiffusionPipeline) -> list[str]:
    problems = []
    for module, f in factors.items():
        part, _, name = module.partition(".")
        model = getattr(pipe, part)
        layer = _find(model, name)
        if layer is None:
            problems.append(f"{module}: no such layer in the pipeline's {part} (is this LoRA for another model?)")
            continue
        base = getattr(layer, "base_layer", layer)
        expected = ((f["A"].shape[0], base.in_features), (base.out_features, f["A"].shape[0]))
        found = (tuple(f["A"].shape), tuple(f["B"].shape))
        if found != expected:
            problems.append(f"{module}: shape mismatch, expected A {expected[0]} and B {expected[1]}, found A {found[0]} and B {found[1]}")
    return problems


def _find(model: torch.nn.Module, name: str) -> torch.nn.Module | None:
    for candidate in (name, name.removeprefix("text_model.")):  # transformers 5's CLIPTextModel has no text_model
        try:
            layer = model.get_submodule(candidate)
        except AttributeError:
            continue
        if hasattr(getattr(layer, "base_layer", layer), "in_features"):
            return layer
    return None
