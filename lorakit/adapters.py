"""peft LoRA adapters on a pipeline, saved and reloaded as diffusers LoRA files; checkpoints.

This is the path people take on SD 1.5: `unet.add_adapter(LoraConfig(...))`, training, then
`StableDiffusionPipeline.save_lora_weights` and `pipe.load_lora_weights`. `conv=True` also adapts
the ResNet convolutions (3x3 LoRA, "LoCon" in kohya's terms), which lets an adapter change where
things are drawn, not only what: attention projections act on each position alike.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import (LoHaConfig, LoKrConfig, LoraConfig, PeftConfig, get_peft_model_state_dict, inject_adapter_in_model,
                  set_peft_model_state_dict)
from peft.tuners.tuners_utils import BaseTunerLayer

from lorakit.algorithms import unsupported
from lorakit.formats import LoraFileError, inspect_lora, installed_name, peft_layout, read_state, save_lora, sd15_name
from lorakit.paths import check_output_folder, repo_path
from lorakit.pipeline import LORA_TARGETS, TEXT_LORA_TARGETS, quiet_loading
from lorakit.seeds import seeded

CONV_TARGETS = ("conv1", "conv2")  # the 3x3 convolutions inside every UNet ResNet block
_CHECKPOINT = re.compile(r"step_(\d+)\.safetensors")


# peft warns that a second adapter makes "multiple adapters in the model": in this kit that is the point
_SECOND_ADAPTER = "Already found a `peft_config` attribute"


def add_adapter(
    pipe: StableDiffusionPipeline,
    rank: int = 4,
    alpha: float | None = None,
    dropout: float = 0.0,
    conv: bool = False,
    text_encoder: bool = True,
    name: str = "default",
    seed: int | None = 0,
    targets: Sequence[str] | None = None,
    kind: str = "lora",
) -> StableDiffusionPipeline:
    """Add a trainable peft adapter named `name` to the UNet's attention (+ ResNet convs) and the text encoder's.

    Alpha defaults to the rank (scale alpha/r = 1). `seed` fixes the random init of the A factors
    (torch's global RNG is seeded for the init only; seed=None draws from the caller's stream instead).
    `targets` replaces the UNet's default target modules (e.g. only the cross-attention's to_k, to_v).
    `kind` picks peft's adapter: "lora", "dora" (`use_dora`), "loha" (`LoHaConfig`) or "lokr" (`LoKrConfig`).
    """
    if kind not in ADAPTER_KINDS:
        raise ValueError(f"kind must be one of {ADAPTER_KINDS}, got {kind!r}")
    if dropout and kind in ("loha", "lokr"):
        raise ValueError(f"dropout is LoRA's (lora_dropout); peft's {kind} has rank_dropout and module_dropout "
                         "instead: use kind='lora' or 'dora' with dropout, or dropout=0")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0 (the scale is alpha / rank), got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if isinstance(targets, str):
        raise TypeError(f"targets must be a list of module names, e.g. [{targets!r}]; got the string {targets!r}")
    for model in (pipe.unet, pipe.text_encoder) if text_encoder else (pipe.unet,):
        if _has_adapter(model, name):
            raise ValueError(f"the {'UNet' if model is pipe.unet else 'text encoder'} already has an adapter named "
                             f"{name!r}; choose another name, or load a fresh pipeline")
    alpha = float(alpha if alpha is not None else rank)
    if targets is None:
        targets = list(LORA_TARGETS) + (list(CONV_TARGETS) if conv else [])
    targets = list(targets)
    with seeded(seed), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECOND_ADAPTER)  # several named adapters are the point here
        pipe.unet.add_adapter(_config(kind, rank, alpha, dropout, targets), adapter_name=name)
        if text_encoder:
            _add_text_encoder_adapter(pipe.text_encoder, _config(kind, rank, alpha, dropout, list(TEXT_LORA_TARGETS)), name)
    for model in (pipe.unet, pipe.text_encoder):
        model.train(model.training)  # peft's new layers start in training mode: LoRA dropout would be on when sampling
    return pipe


ADAPTER_KINDS = ("lora", "dora", "loha", "lokr")


def _config(kind: str, rank: int, alpha: float, dropout: float, targets: list[str]) -> PeftConfig:
    """peft's config for one kind of adapter: LoRA (ΔW = B A), DoRA (LoRA on the direction, a learnt magnitude),
    LoHa (a Hadamard product of two rank-r products), LoKr (a Kronecker product)."""
    if kind == "loha":
        return LoHaConfig(r=rank, alpha=alpha, target_modules=targets)
    if kind == "lokr":
        return LoKrConfig(r=rank, alpha=alpha, target_modules=targets)
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, use_dora=kind == "dora")


def _add_text_encoder_adapter(text_encoder: torch.nn.Module, config: PeftConfig, name: str) -> None:
    """What transformers' `add_adapter` does, without its check for peft >= 0.22 (the kit pins peft 0.21.2,
    with which diffusers loads text-encoder LoRAs through transformers' `load_adapter` in the same way)."""
    inject_adapter_in_model(config, text_encoder, adapter_name=name)
    text_encoder.peft_config = {**(getattr(text_encoder, "peft_config", None) or {}), name: config}
    text_encoder._hf_peft_config_loaded = True
    for module in text_encoder.modules():  # make it the active adapter, as diffusers' unet.add_adapter does
        if isinstance(module, BaseTunerLayer):
            module.set_adapter(name)


def load_adapter(pipe: StableDiffusionPipeline, path: str | Path, name: str) -> StableDiffusionPipeline:
    """`pipe.load_lora_weights(path, adapter_name=name)`, without transformers' load report.

    When a second adapter is loaded, transformers reports the first one's text-encoder weights as
    "MISSING ... newly initialized": they are only absent from the new file, and stay untouched.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name the adapter (a non-empty string, e.g. 'orange'), got {name!r}")
    if _has_adapter(pipe.unet, name) or _has_adapter(pipe.text_encoder, name):
        raise ValueError(f"the pipeline already has an adapter named {name!r}; choose another name, "
                         "or pipe.delete_adapters(name) first")
    info = inspect_lora(path, pipe)  # a file that does not fit is explained before the pipeline changes
    if not info.diffusers_loads:
        raise LoraFileError(unsupported(info.algorithm, info.path.name))
    if info.problems:
        raise LoraFileError(f"{Path(path).name} cannot be loaded into this pipeline ({len(info.problems)} problems): "
                            + "; ".join(info.problems[:3]))
    with quiet_loading(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECOND_ADAPTER)
        # a file and its name: older diffusers will not guess the name offline
        pipe.load_lora_weights(str(info.path.parent), weight_name=info.path.name, adapter_name=name)
    return pipe


def _has_adapter(model: torch.nn.Module, name: str) -> bool:
    return name in (getattr(model, "peft_config", None) or {})


def adapter_state(pipe: StableDiffusionPipeline, name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights as an SD 1.5 diffusers LoRA file names them: "unet.<module>.lora_A.weight",
    "text_encoder.text_model.<module>..." (under either transformers generation).

    This is what `lorakit.formats.save_lora` takes (with the adapter's alpha).
    """
    if not _has_adapter(pipe.unet, name):
        known = sorted(getattr(pipe.unet, "peft_config", None) or {})
        raise KeyError(f"the UNet has no adapter named {name!r}; it has {known or 'none'} (see add_adapter)")
    state = {"unet": convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet, adapter_name=name))}
    if _has_adapter(pipe.text_encoder, name):
        state["text_encoder"] = convert_state_dict_to_diffusers(
            get_peft_model_state_dict(pipe.text_encoder, adapter_name=name))
    return {f"{part}.{sd15_name(part, k)}": v.detach().cpu().clone() for part, sd in state.items() for k, v in sd.items()}


def adapter_alphas(pipe: StableDiffusionPipeline, name: str = "default") -> dict[str, float]:
    """Each adapted layer's alpha, keyed as `adapter_state` names its modules ("unet.<module>", "text_encoder.text_model....")."""
    return {f"{part}.{sd15_name(part, n)}": float(m.lora_alpha[name])
            for part in ("unet", "text_encoder") for n, m in getattr(pipe, part).named_modules()
            if isinstance(m, BaseTunerLayer) and name in getattr(m, "lora_alpha", {})}


def save_adapter(pipe: StableDiffusionPipeline, path: str | Path, name: str = "default", overwrite: bool = False) -> Path:
    """Write the adapter as one diffusers LoRA file with SD 1.5's key names and its alphas (`save_lora`); atomic.

    The file's LoraConfig holds only what both peft generations read (rank, alpha, targets and their
    patterns). An existing file at `path` is replaced only with `overwrite=True`.
    """
    return save_lora(adapter_state(pipe, name), path, alpha=adapter_alphas(pipe, name), overwrite=overwrite)


def load_adapter_weights(pipe: StableDiffusionPipeline, path: str | Path, name: str = "default") -> None:
    """Overwrite the weights of an existing adapter with a file written by `save_adapter` (fast: no new layers).

    To load a file into a pipeline without that adapter, use diffusers' `pipe.load_lora_weights(path)`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA file at {path}")
    for part, sub in peft_layout(read_state(path)[0]).items():
        model = getattr(pipe, part)
        if not _has_adapter(model, name):
            raise KeyError(f"{path.name} holds {part} weights but the {part} has no adapter named {name!r}")
        result = set_peft_model_state_dict(model, {installed_name(model, k): v for k, v in sub.items()}, adapter_name=name)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
        if unexpected:
            raise ValueError(f"{path.name} does not match the {part}'s adapter {name!r}: "
                             f"unexpected keys such as {unexpected[:3]}")


def is_checkpoint_folder(folder: Path) -> bool:
    """True if a folder holds only checkpoints named step_NNNNNN.safetensors (what CheckpointSaver writes)."""
    return all(_CHECKPOINT.fullmatch(p.name) for p in folder.iterdir())


class CheckpointSaver:
    """An `on_step` callback for `finetune.train`: saves the adapter every `every` steps as step_NNNNNN.safetensors.

    A folder holds one run's checkpoints. The folder must be new or empty; one holding an earlier
    run's checkpoints (and nothing else) is cleared only with `overwrite=True`, so they can never be
    mistaken for this run's; a folder holding anything else is refused. Relative folders start at
    the repository root. `paths` maps each saved step to its file.
    """

    def __init__(self, pipe: StableDiffusionPipeline, folder: str | Path, every: int, name: str = "default",
                 overwrite: bool = False) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every!r}")
        folder = check_output_folder(repo_path(folder), is_checkpoint_folder, "checkpoint folder", overwrite)
        self.pipe, self.folder, self.every, self.name = pipe, folder, every, name
        self._stale = list(list_checkpoints(folder).values())  # removed when the first new one is written
        self.paths: dict[int, Path] = {}

    def __call__(self, step: int, loss: float) -> None:
        if step % self.every == 0:
            for stale in self._stale:  # an earlier run's checkpoints (overwrite=True): never mixed with this run's
                stale.unlink(missing_ok=True)
            self._stale = []
            path = self.folder / f"step_{step:06d}.safetensors"  # in a folder checked to be this saver's
            self.paths[step] = save_adapter(self.pipe, path, self.name, overwrite=True)


def list_checkpoints(folder: str | Path) -> dict[int, Path]:
    """The checkpoints in a folder, by training step, in order."""
    found = {}
    for path in Path(folder).glob("step_*.safetensors"):
        match = _CHECKPOINT.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))
