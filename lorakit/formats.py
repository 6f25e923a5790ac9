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
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lorakit.algorithms import DIFFUSERS_LOADS, LYCORIS_ONLY, algorithm, lycoris_layers, unsupported
from lorakit.layout import TEXT_PREFIX
from lorakit.paths import atomic_path, check_output_file

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
    algorithm: str = "LoRA"  # LoRA, LoCon, LoHa, LoKr or DoRA (lorakit.algorithms)

    @property
    def diffusers_loads(self) -> bool:
        """Whether stock diffusers' `load_lora_weights` applies this file as it means (LoRA and LoCon only)."""
        return self.algorithm in DIFFUSERS_LOADS

    @property
    def scales(self) -> dict[str, float]:
        """alpha / rank per module: the factor the LoRA's output is multiplied by."""
        return {m: self.alphas[m] / r for m, r in self.ranks.items()}

    @property
    def targets(self) -> list[str]:
        """The kinds of base layers adapted, named as peft's target_modules would ("to_q", "to_out.0", "ff.net.2")."""
        return sorted({target_name(m) for m in self.ranks})

    def report(self) -> str:
        """A short human-readable summary."""
        parts = {p: sum(1 for m in self.ranks if m.startswith(p + ".")) for p in _PARTS}
        loads = "stock diffusers loads it" if self.diffusers_loads else "stock diffusers cannot load it as it means"
        lines = [f"{self.path.name}: {self.algorithm} ({loads}), {self.format} format, {self.file_bytes / 1024:.0f} KiB, "
                 f"{self.n_params:,} parameters",
                 f"  layers: {parts['unet']} in the UNet, {parts['text_encoder']} in the text encoder; targets {self.targets}",
                 f"  rank {sorted(set(self.ranks.values()))}, alpha {sorted(set(self.alphas.values()))} "
                 f"({self.alpha_from}), scale {sorted(set(round(s, 4) for s in self.scales.values()))}"]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


_GENERIC = {"proj", "conv", "net"}  # module names that say nothing without their parent


def target_name(module: str) -> str:
    """The shortest dotted suffix of a module path that names a kind of layer: "...attn1.to_out.0" -> "to_out.0",
    "...ff.net.0.proj" -> "ff.net.0.proj", "...resnets.0.conv1" -> "conv1"."""
    parts = module.split(".")
    i = len(parts) - 1
    while i > 0 and (parts[i].isdigit() or parts[i] in _GENERIC):
        i -= 1
    return ".".join(parts[i:])


_ADAPTER_NAME = re.compile(r"\.(lora_[AB])\.[^.]+\.weight$")  # peft inside a model: "...lora_A.default.weight"


def split_key(key: str, part: str | None = None) -> tuple[str, str, str]:
    """(part, module, "A"|"B") of a LoRA key in any diffusers/peft layout, e.g. ("unet", "down_blocks.0...to_q", "A").

    The one place LoRA key names are parsed. Keys of one model's adapter (peft's
    `get_peft_model_state_dict(pipe.unet)`, without "unet.") need that model's `part`; peft's
    "base_model.model." prefix and adapter names ("lora_A.default.weight") are dropped.
    """
    key = _ADAPTER_NAME.sub(r".\1.weight", key.removeprefix("base_model.model."))
    head, _, tail = key.partition(".")
    if head in _PARTS:
        part, rest = head, tail
    elif part in _PARTS:
        rest = key
    else:
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
        part, module, which = split_key(key)
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


def sd15_name(part: str, module: str) -> str:
    """A module's name as SD 1.5 LoRA files spell it: CLIP's layers under "text_model." (whatever transformers says)."""
    return TEXT_PREFIX + module.removeprefix(TEXT_PREFIX) if part == "text_encoder" else module


def installed_name(model: torch.nn.Module, module: str) -> str:
    """A module's name as the installed model spells it: transformers 4's CLIPTextModel has "text_model.", 5's has not."""
    bare = module.removeprefix(TEXT_PREFIX)
    return TEXT_PREFIX + bare if hasattr(model, "text_model") else bare


def _kohya_name(module: str) -> str:
    part, _, path = module.partition(".")
    return _PARTS[part] + sd15_name(part, path).replace(".", "_")


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
    attention-processor names are then renamed to module names, as SD 1.5 files spell them (`sd15_name`).
    """
    if not any(k.startswith(_KOHYA_PREFIXES) for k in kohya_state_dict):
        raise LoraFileError("not a kohya LoRA: no key starts with 'lora_unet_' or 'lora_te_'")
    _check_kohya_keys(kohya_state_dict)
    try:
        state, network_alphas = StableDiffusionPipeline.lora_state_dict(dict(kohya_state_dict))
    except Exception as err:  # diffusers' converter raises many kinds of errors on keys it does not know
        raise LoraFileError(f"diffusers cannot convert these kohya keys ({type(err).__name__}: {str(err)[:200]}); "
                            "is it a LoRA for an SD 1.x model?") from err
    peft_state, alphas = {}, {}
    for key, value in state.items():
        part, module, which = split_key(key)
        peft_state[f"{part}.{sd15_name(part, module)}.lora_{which}.weight"] = value
    for key, value in (network_alphas or {}).items():
        stem = key.removesuffix(".alpha")
        try:  # text-encoder alphas are named after a weight, UNet alphas after their module
            part, module, _ = split_key(stem)
        except LoraFileError:
            part, _, module = stem.partition(".")
        alphas[f"{part}.{sd15_name(part, module)}"] = float(value)
    return peft_state, alphas


_KOHYA_ENDINGS = (".lora_down.weight", ".lora_up.weight", ".alpha")


def _check_factor_shapes(name: str, A: torch.Tensor, B: torch.Tensor) -> None:
    """A (down) and B (up) make a LoRA: both 2-d (Linear) or both 4-d (Conv2d), with one rank r >= 1 between them."""
    if A.ndim not in (2, 4) or B.ndim != A.ndim or A.shape[0] != B.shape[1] or A.shape[0] < 1:
        raise LoraFileError(f"{name}: A/down {tuple(A.shape)} and B/up {tuple(B.shape)} do not make a LoRA "
                            "(expected A (r, in[, kh, kw]) and B (out, r[, 1, 1]))")


def _check_kohya_keys(state: dict[str, torch.Tensor]) -> None:
    """Every kohya layer has a down and an up factor of matching rank, and at most a scalar alpha."""
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        ending = next((e for e in _KOHYA_ENDINGS if key.endswith(e)), None)
        if ending is None or not key.startswith(_KOHYA_PREFIXES):
            raise LoraFileError(f"key {key!r} is not a kohya LoRA key (expected 'lora_unet_...' or 'lora_te_...' "
                                f"ending in {', '.join(_KOHYA_ENDINGS)})")
        layers.setdefault(key[: -len(ending)], {})[ending] = value
    for stem, parts in layers.items():
        down, up, alpha = parts.get(".lora_down.weight"), parts.get(".lora_up.weight"), parts.get(".alpha")
        if down is None or up is None:
            raise LoraFileError(f"{stem}: only one factor (lora_down or lora_up missing); the file is incomplete")
        _check_factor_shapes(stem, down, up)
        if alpha is not None and alpha.numel() != 1:
            raise LoraFileError(f"{stem}.alpha holds {alpha.numel()} numbers; alpha is one number per layer")


_PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_FOLDER_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")  # diffusers, peft


def _lora_file(path: Path) -> Path:
    """The LoRA file itself: `path`, or the one a diffusers (save_lora_weights) or peft (save_pretrained) folder holds."""
    if path.is_dir():
        for name in _FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        listed = f" ({', '.join(p.name for p in found[:4])})" if found else ""
        raise LoraFileError(f"the folder {path} holds {'no' if not found else len(found)} .safetensors files{listed}; "
                            f"expected one of {list(_FOLDER_FILES)}, or give the file's path")
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}")
    return path


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors LoRA file (or folder); pickles are refused, never unpickled."""
    path = _lora_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    safetensors_header = head[8:9] == b"{"  # 8 bytes of header length, then the JSON header
    pickled = head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
    if not safetensors_header and (pickled or path.suffix in _PICKLE_SUFFIXES):
        raise LoraFileError(
            f"{path.name} is a pickle (a PyTorch .ckpt/.bin/.pt file), which lorakit does not unpickle: loading a "
            "pickle can run any code inside it. Ask for the .safetensors version of this LoRA, or convert it "
            "yourself with a tool you trust (torch.load on a file you made, then safetensors.torch.save_file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            state, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # safetensors' own errors vary by what is broken; all mean the same here
        raise LoraFileError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err
    if state and all(k.startswith("base_model.model.") for k in state):
        return _from_peft_file(state, path)
    return state, metadata


def _from_peft_file(state: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A peft adapter_model.safetensors (keys "base_model.model.<module>.lora_A.weight") as diffusers keys + metadata.

    The component is told by the module names (CLIP's layers live in "encoder.layers"); alpha comes
    from the adapter_config.json beside the file, as peft saves it.
    """
    parts = {}
    for key in state:
        module = key.removeprefix("base_model.model.")
        parts[key] = "text_encoder" if module.startswith(("text_model.", "encoder.layers.")) else "unet"
    if len(set(parts.values())) > 1:
        raise LoraFileError(f"{path.name} mixes UNet and text-encoder layers under peft's base_model.model. prefix; "
                            "save each component's adapter separately")
    part = next(iter(parts.values()))
    converted = {f"{part}.{k.removeprefix('base_model.model.')}": v for k, v in state.items()}
    config = path.parent / "adapter_config.json"
    metadata = {}
    if config.is_file():
        try:
            cfg = json.loads(config.read_text())
            metadata["lora_adapter_metadata"] = json.dumps(
                {f"{part}.lora_alpha": cfg["lora_alpha"], f"{part}.alpha_pattern": cfg.get("alpha_pattern") or {}})
        except (ValueError, KeyError, TypeError) as err:
            raise LoraFileError(f"{config} is not a readable peft adapter config ({err}); fix or remove it "
                                "(without it alpha = rank is assumed)") from err
    return converted, metadata


def _detect(state: dict[str, torch.Tensor], path: Path) -> str:
    keys = list(state)
    other = [k for k in keys if ".oft_" in k or "oft_blocks" in k or ".b_norm" in k or ".w_norm" in k]
    if other:
        raise LoraFileError(f"{path.name} is a LyCORIS network of a kind lorakit does not read (keys such as {other[:2]}: "
                            "OFT, BOFT or a normalisation adapter); lorakit reads LoRA, LoCon, LoHa, LoKr and DoRA files")
    # weights must be float; kohya's .alpha may be any number (diffusers' converter writes int64)
    not_float = [k for k, v in state.items()
                 if not (v.is_floating_point() or (k.endswith(".alpha") and v.dtype != torch.bool))]
    if not_float:
        raise LoraFileError(f"{path.name}: {len(not_float)} tensors are not floating point (e.g. {not_float[0]} is "
                            f"{state[not_float[0]].dtype}); a LoRA file holds float weights")
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
    except (ValueError, KeyError, TypeError, AttributeError):
        found = None
    if found is not None:
        return found, "file metadata"
    return {m: float(f["A"].shape[0]) for m, f in factors.items()}, "missing: alpha = rank assumed"


def _parse(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path
           ) -> tuple[str, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], dict[str, float], str]:
    """(format, the file's tensors, factors per "unet.<module>", alpha per module, where alpha came from) of what read_state read."""
    state = {k: v for k, v in state.items() if not k.endswith(_DORA_SCALE)}  # DoRA's magnitudes: counted, not factors
    fmt = _detect(state, path)
    if fmt == "kohya":
        peft_state, alphas = from_kohya(state)
        factors = _factors(peft_state)
        alpha_from = ".alpha keys" if alphas else "missing: alpha = rank assumed"
        alphas = {m: alphas.get(m, float(f["A"].shape[0])) for m, f in factors.items()}
    else:
        factors = _factors(state)
        for module, f in factors.items():
            _check_factor_shapes(module, f["A"], f["B"])
        alphas, alpha_from = _diffusers_alphas(metadata, factors)
    return fmt, state, factors, alphas, alpha_from


def _value_problems(factors: dict[str, dict[str, torch.Tensor]], alphas: dict[str, float]) -> list[str]:
    """Weights that are NaN or infinite, and alphas that are not finite and positive."""
    problems = [f"{m}: the {'A' if not torch.isfinite(f['A']).all() else 'B'} factor holds NaN or inf values "
                "(the training diverged?); it would draw black or noise images"
                for m, f in factors.items() if not (torch.isfinite(f["A"]).all() and torch.isfinite(f["B"]).all())]
    problems += [f"{m}: alpha is {a} (it must be a finite number > 0; the scale is alpha / rank)"
                 for m, a in alphas.items() if not (math.isfinite(a) and a > 0)]
    return problems


def load_lora(path: str | Path, pipe: StableDiffusionPipeline | None = None) -> dict[str, torch.Tensor]:
    """Read a LoRA file (kohya, diffusers, peft; or a folder holding one); returns a kohya-layout dict.

    The kohya layout is returned because it is the one dict layout in which stock diffusers reads
    alpha from the dict itself, so `pipe.load_lora_weights(load_lora(path))` reproduces the adapter,
    alpha != rank included. A diffusers file's alpha comes from its metadata, a peft file's from the
    adapter_config.json beside it. NaN weights or alphas raise LoraFileError; so does, with `pipe`,
    any layer that does not fit it (the first mismatches with expected and found shapes).
    Never writes anything.
    """
    path = Path(path)
    state, metadata = read_state(path)
    algo = algorithm(state)
    if algo not in DIFFUSERS_LOADS:
        raise LoraFileError(unsupported(algo, _lora_file(path).name))
    fmt, state, factors, alphas, _ = _parse(state, metadata, path)
    problems = _value_problems(factors, alphas) + (_fit_problems(factors, pipe) if pipe is not None else [])
    if problems:
        raise LoraFileError(f"{path.name} cannot be used ({len(problems)} problems): " + "; ".join(problems[:3]))
    if fmt == "kohya":
        return {k: v.float() if k.endswith(".alpha") else v for k, v in state.items()}
    return to_kohya({f"{m}.lora_{ab}.weight": f[ab] for m, f in factors.items() for ab in "AB"}, alphas)


def save_lora(state_dict: dict[str, torch.Tensor], path: str | Path, format: str = "diffusers",
              alpha: float | dict[str, float] | None = None, overwrite: bool = False) -> Path:
    """Write a LoRA (diffusers/peft keys, or kohya keys with .alpha) as `format`, atomically, alpha kept.

    A diffusers/peft dict carries no alpha: pass `alpha` (one float, or per "unet.<module>"); a kohya
    dict brings its own. A diffusers file stores alpha in the metadata diffusers reads back
    (`unet_lora_adapter_metadata`), with an alpha_pattern where layers differ. An existing file
    at `path` is replaced only with `overwrite=True`; everything is checked before anything is written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError("state_dict must be a non-empty dict of LoRA tensors (e.g. from lorakit.adapters.adapter_state)")
    path = Path(path)
    if any(k.startswith(_KOHYA_PREFIXES) for k in state_dict):  # kohya in
        peft_state, alphas = from_kohya(state_dict)
    else:
        if alpha is None:
            raise ValueError("this state dict has no alpha: pass alpha= (the LoRA's scale is alpha / rank); "
                             "without it every loader assumes alpha = rank")
        peft_state = state_dict
        modules = _factors(state_dict)
        if isinstance(alpha, dict):
            missing = sorted(set(modules) - set(alpha))
            if missing:
                raise ValueError(f"alpha has no value for {len(missing)} modules (e.g. {missing[0]}); give one per module")
            alphas = {m: alpha[m] for m in modules}
        else:
            alphas = {m: alpha for m in modules}
        bad = {m: a for m, a in alphas.items() if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0)}
        if bad:
            m, a = next(iter(bad.items()))
            raise ValueError(f"alpha must be a finite number > 0 (the LoRA's scale is alpha / rank), got {a!r} "
                             f"for {m}; nothing was written")
        alphas = {m: float(a) for m, a in alphas.items()}
    factors = _factors(peft_state)
    problems = _value_problems(factors, alphas)
    if problems:
        raise ValueError(f"refusing to write {path.name}: " + "; ".join(problems[:3]))
    check_output_file(path, overwrite, "LoRA file")
    if format == "kohya":
        with atomic_path(path) as tmp:
            save_file(to_kohya(peft_state, alphas), str(tmp), metadata={"ss_network_module": "networks.lora"})
        return path
    layers, metadata = {}, {}
    for part in _PARTS:
        mods = {m.partition(".")[2]: f for m, f in factors.items() if m.startswith(part + ".")}
        if not mods:
            continue
        # keys as SD 1.5 files spell them; the LoraConfig names modules without "text_model.", which peft
        # matches as a suffix in both transformers generations
        layers[part] = {f"{sd15_name(part, m)}.lora_A.weight": f["A"] for m, f in mods.items()} | \
            {f"{sd15_name(part, m)}.lora_B.weight": f["B"] for m, f in mods.items()}
        part_alphas = {m.removeprefix(TEXT_PREFIX): alphas[f"{part}.{m}"] for m in mods}
        ranks = {m.removeprefix(TEXT_PREFIX): f["A"].shape[0] for m, f in mods.items()}
        common = max(set(part_alphas.values()), key=list(part_alphas.values()).count)
        metadata[part] = {"r": max(ranks.values()), "lora_alpha": common, "target_modules": sorted(ranks),
                          "rank_pattern": {m: r for m, r in ranks.items() if r != max(ranks.values())},
                          "alpha_pattern": {m: a for m, a in part_alphas.items() if a != common}}
    with atomic_path(path) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp.parent, unet_lora_layers=layers.get("unet"), text_encoder_lora_layers=layers.get("text_encoder"),
            unet_lora_adapter_metadata=metadata.get("unet"), text_encoder_lora_adapter_metadata=metadata.get("text_encoder"),
            weight_name=tmp.name, safe_serialization=True)
    return path


def inspect_lora(path: str | Path, pipe: StableDiffusionPipeline | None = None) -> LoraInfo:
    """Rank, alpha and scale per module, targets, parameters and size; problems: NaN values, and with `pipe`, what does not fit it.

    Reads only: the pipeline is never changed.
    """
    path = Path(path)
    file = _lora_file(path)
    state, metadata = read_state(path)
    algo = algorithm(state)
    if algo in LYCORIS_ONLY:
        return _inspect_lycoris(file, state, algo, pipe)
    fmt, _, factors, alphas, alpha_from = _parse(state, metadata, path)
    magnitudes = sum(v.numel() for k, v in state.items() if k.endswith(_DORA_SCALE))
    info = LoraInfo(file, fmt, {m: int(f["A"].shape[0]) for m, f in factors.items()}, alphas,
                    sum(v.numel() for f in factors.values() for v in f.values()) + magnitudes, file.stat().st_size,
                    alpha_from, algorithm=algo)
    info.problems = _value_problems(factors, alphas) + (_fit_problems(factors, pipe) if pipe is not None else [])
    return info


_DORA_SCALE = ".dora_scale"  # a kohya/LyCORIS DoRA layer's per-column magnitudes


def _kohya_names(pipe: StableDiffusionPipeline) -> dict[str, str]:
    """kohya stem -> "unet.<module>" for every Linear and Conv2d of the pipeline (text encoder with and without text_model)."""
    names = {}
    for part in _PARTS:
        for name, module in getattr(pipe, part).named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                module_name = f"{part}.{sd15_name(part, name.removesuffix('.base_layer'))}"
                names[_kohya_name(module_name)] = module_name  # SD 1.5's: lora_te_text_model_...
                names[_PARTS[part] + name.removesuffix(".base_layer").replace(".", "_")] = module_name  # as installed
    return names


def _inspect_lycoris(file: Path, state: dict[str, torch.Tensor], algo: str, pipe: StableDiffusionPipeline | None) -> LoraInfo:
    """`inspect_lora` for a LoHa or LoKr file: ranks, alphas and parameters per layer; with `pipe`, layers it lacks."""
    try:
        layers = lycoris_layers(state)
    except ValueError as err:
        raise LoraFileError(f"{file.name}: {err}") from err
    names = _kohya_names(pipe) if pipe is not None else {}
    name = {stem: names.get(stem, stem) for stem in layers}
    problems = [f"{stem}: no such layer in the pipeline (is this network for another model?)"
                for stem in layers if pipe is not None and stem not in names]
    problems += [f"{k}: holds NaN or inf values (the training diverged?)" for k, v in state.items()
                 if v.is_floating_point() and not torch.isfinite(v).all()]
    has_alpha = any(k.endswith(".alpha") for k in state)
    return LoraInfo(file, "kohya", {name[s]: int(l["rank"]) for s, l in layers.items()},
                    {name[s]: l["alpha"] for s, l in layers.items()}, int(sum(l["params"] for l in layers.values())),
                    file.stat().st_size, ".alpha keys" if has_alpha else "missing: alpha = rank assumed", problems,
                    algorithm=algo)


def _expected_shapes(layer: torch.nn.Module, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The A and B shapes a rank-r LoRA on this layer has: Linear (r, in), (out, r); Conv2d (r, in, kh, kw), (out, r, 1, 1)."""
    if isinstance(layer, torch.nn.Conv2d):
        return (rank, layer.in_channels, *layer.kernel_size), (layer.out_channels, rank, 1, 1)
    return (rank, layer.in_features), (layer.out_features, rank)


def _fit_problems(factors: dict[str, dict[str, torch.Tensor]], pipe: StableDiffusionPipeline) -> list[str]:
    problems = []
    for module, f in factors.items():
        part, _, name = module.partition(".")
        model = getattr(pipe, part)
        layer = _find(model, name)
        if layer is None:
            problems.append(f"{module}: no such layer in the pipeline's {part} (is this LoRA for another model?)")
            continue
        expected = _expected_shapes(layer, f["A"].shape[0])
        found = (tuple(f["A"].shape), tuple(f["B"].shape))
        if isinstance(layer, torch.nn.Linear):  # kohya may store a Linear's factors as 1x1 convolutions
            found = tuple(shape[:2] if shape[2:] == (1, 1) else shape for shape in found)
        if found != expected:
            problems.append(f"{module}: shape mismatch, expected A {expected[0]} and B {expected[1]}, "
                            f"found A {found[0]} and B {found[1]}")
    return problems


def _find(model: torch.nn.Module, name: str) -> torch.nn.Module | None:
    """The base layer (Linear or Conv2d) a LoRA module name points at, or None."""
    for candidate in (name, installed_name(model, name)):
        try:
            layer = model.get_submodule(candidate)
        except AttributeError:
            continue
        layer = getattr(layer, "base_layer", layer)
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            return layer
    return None
