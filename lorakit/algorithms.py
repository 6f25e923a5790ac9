"""Which adapter algorithm a LoRA-style file holds, and whether stock diffusers loads it faithfully.

Besides LoRA, people share the adapters of LyCORIS (KohakuBlueleaf's library, `lycoris-lora` on
PyPI), in kohya's key layout ("lora_unet_<module>", "lora_te_<module>"), told apart by their keys:

- **LoRA**: `lora_down` (A) and `lora_up` (B); **LoCon**: the same on 3 x 3 convolutions too;
- **LoHa**: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`: ΔW = (w1_a w1_b) ⊙ (w2_a w2_b), a
  Hadamard product of two low-rank matrices;
- **LoKr**: `lokr_w1` and `lokr_w2` (each may be split into `_a`, `_b` factors): ΔW = w1 ⊗ w2, a
  Kronecker product;
- **DoRA**: LoRA's keys plus `dora_scale`, the magnitude of each column of the adapted weight
  (LyCORIS's and kohya's form; peft's own DoRA files carry `lora_magnitude_vector` instead, which
  lorakit does not read).

Stock diffusers (0.42 and 0.35) loads LoRA and LoCon files with the images LyCORIS's own code draws;
it refuses LoHa and LoKr ("keys have not been correctly renamed") and loads a kohya DoRA file without
its `dora_scale`, with a warning and different images (tests/test_lycoris.py measures all three).
"""

from __future__ import annotations

from typing import Mapping

import torch

DIFFUSERS_LOADS = frozenset({"LoRA", "LoCon"})  # what `pipe.load_lora_weights` applies as the file means it
LYCORIS_ONLY = frozenset({"LoHa", "LoKr"})  # weights that are not A and B factors at all
_LYCORIS_ENDINGS = (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
                    ".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
                    ".alpha", ".dora_scale")


def algorithm(state: Mapping[str, torch.Tensor]) -> str:
    """The adapter algorithm of a file's tensors: "LoHa", "LoKr", "DoRA", "LoCon" or "LoRA"."""
    keys = list(state)
    if any(".hada_" in k for k in keys):
        return "LoHa"
    if any(".lokr_" in k for k in keys):
        return "LoKr"
    if any(k.endswith(".dora_scale") for k in keys):
        return "DoRA"
    downs = [v for k, v in state.items() if k.endswith((".lora_down.weight", ".lora_A.weight", ".lora.down.weight"))]
    return "LoCon" if any(v.dim() == 4 and v.shape[-1] > 1 for v in downs) else "LoRA"


def unsupported(algo: str, file_name: str) -> str:
    """Why stock diffusers cannot load a file of this algorithm as it means, and what to do instead."""
    if algo == "DoRA":
        why = ("stock diffusers loads a kohya DoRA file without its dora_scale (the magnitudes): it warns and "
               "draws other images than the file means")
    else:
        why = f"stock diffusers cannot load {algo} files (it stops with 'keys have not been correctly renamed')"
    return (f"{file_name} is a LyCORIS {algo} network: {why}. Apply it with LyCORIS itself "
            "(`net, _ = lycoris.create_lycoris_from_weights(1.0, path, pipe.unet)`, then `net.apply_to()`), "
            "or in a UI that reads LyCORIS files (ComfyUI, A1111)")


def lycoris_layers(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """Per layer of a LoHa or LoKr file (keyed by its kohya stem): rank, alpha (rank when missing) and parameters."""
    stems: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        ending = next((e for e in _LYCORIS_ENDINGS if key.endswith(e)), None)
        if ending is None:
            raise ValueError(f"key {key!r} is not a LoHa or LoKr weight (expected endings such as '.hada_w1_a', "
                             "'.lokr_w1', '.alpha')")
        stems.setdefault(key[: -len(ending)], {})[ending[1:]] = value
    layers = {}
    for stem, t in stems.items():
        if "hada_w1_b" in t:
            rank = t["hada_w1_b"].shape[0]  # w1_a (out, r), w1_b (r, in)
        elif "lokr_w2_b" in t or "lokr_w1_b" in t:
            rank = (t.get("lokr_w2_b") if "lokr_w2_b" in t else t["lokr_w1_b"]).shape[0]
        elif "lokr_w2" in t:  # both Kronecker factors full: LyCORIS writes alpha = its dim there and scales by 1
            rank = int(t["alpha"]) if "alpha" in t else min(t["lokr_w2"].shape[:2])
        else:
            raise ValueError(f"layer {stem} has no LoHa or LoKr factors, only {sorted(t)}")
        alpha = float(t["alpha"]) if "alpha" in t else float(rank)
        layers[stem] = {"rank": rank, "alpha": alpha,
                        "params": sum(v.numel() for name, v in t.items() if name != "alpha")}
    return layers
