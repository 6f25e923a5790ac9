"""Pipeline folders laid out as SD 1.5's, so both generations of transformers load them.

transformers 5 saves a CLIP tokenizer as one `tokenizer.json` and a `CLIPTextModel`'s weights
without the `text_model.` prefix; transformers 4 reads neither. An SD 1.5 folder (e.g.
stable-diffusion-v1-5) ships `tokenizer/` as `vocab.json`, `merges.txt`, `tokenizer_config.json`
and `special_tokens_map.json`, and `text_encoder/model.safetensors` keyed `text_model.…`; both
generations load that. `to_sd15_layout` rewrites a folder that `save_pretrained` wrote into that
layout: the same tokens and the same weights, under SD 1.5's names.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorakit.paths import atomic_path

TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")  # SD 1.5's tokenizer/
TEXT_PREFIX = "text_model."  # SD 1.5's text_encoder/model.safetensors keys start with it
_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


def to_sd15_layout(folder: str | Path) -> None:
    """Rewrite a pipeline folder's tokenizer and text-encoder files as SD 1.5 lays them out (weights unchanged)."""
    folder = Path(folder)
    _tokenizer_files(folder / "tokenizer")
    _text_encoder_keys(folder / "text_encoder" / "model.safetensors")


def is_sd15_layout(folder: str | Path) -> bool:
    """True if the folder's tokenizer files and text-encoder keys are those of an SD 1.5 folder."""
    folder = Path(folder)
    tokenizer = {p.name for p in (folder / "tokenizer").iterdir()} if (folder / "tokenizer").is_dir() else set()
    weights = folder / "text_encoder" / "model.safetensors"
    if tokenizer != set(TOKENIZER_FILES) or not weights.is_file():
        return False
    with safe_open(str(weights), framework="pt") as f:
        return all(k.startswith(TEXT_PREFIX) for k in f.keys())


def _text(token: object) -> str:
    """A special token as a string (transformers 4 may save it as a serialised AddedToken)."""
    return token["content"] if isinstance(token, dict) else str(token)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _tokenizer_files(tokenizer: Path) -> None:
    """vocab.json and merges.txt from a fast tokenizer's tokenizer.json (then removed), and SD 1.5's two configs."""
    fast = tokenizer / "tokenizer.json"
    if fast.is_file():
        model = json.loads(fast.read_text(encoding="utf-8"))["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"{fast} holds a {model.get('type')} tokenizer; a CLIP tokenizer is byte-level BPE")
        vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))  # token -> id, specials included
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        _write(tokenizer / "vocab.json", json.dumps(vocab, ensure_ascii=False))
        _write(tokenizer / "merges.txt", "#version: 0.2\n" + "".join(m + "\n" for m in merges))
    for name in ("vocab.json", "merges.txt"):
        if not (tokenizer / name).is_file():
            raise FileNotFoundError(f"{tokenizer} has neither tokenizer.json nor {name}: not a saved CLIP tokenizer")
    config = json.loads((tokenizer / "tokenizer_config.json").read_text(encoding="utf-8"))
    special = {k: _text(config[k]) for k in _SPECIAL}
    _write(tokenizer / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
    _write(tokenizer / "tokenizer_config.json", json.dumps({
        "add_prefix_space": False, "do_lower_case": True, "errors": "replace",
        "model_max_length": config["model_max_length"], "tokenizer_class": "CLIPTokenizer", **special}, indent=2) + "\n")
    for extra in set(p.name for p in tokenizer.iterdir()) - set(TOKENIZER_FILES):
        (tokenizer / extra).unlink()  # tokenizer.json, added_tokens.json: what SD 1.5's folder does not have


def _text_encoder_keys(weights: Path) -> None:
    """The text encoder's weights under SD 1.5's key names (`text_model.` prefix), dtype and values unchanged."""
    state = load_file(weights)
    if all(k.startswith(TEXT_PREFIX) for k in state):
        return
    with atomic_path(weights) as tmp:
        save_file({k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k: v for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt"})
