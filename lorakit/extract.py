"""Extracting a LoRA from a fully fine-tuned model: the best rank-r approximation of each ΔW.

The kohya "extract LoRA" idea. For every targeted Linear, ΔW = W_tuned - W_base is factored by a
truncated SVD, ΔW ≈ U_r Σ_r V_rᵀ = B A with B = U_r Σ_r^½ and A = Σ_r^½ V_rᵀ. By Eckart–Young no
other rank-r matrix is closer in Frobenius norm. A rank-revealing QR (column pivoting, scipy's
`qr(pivoting=True)`) gives another rank-r form, ΔW P ≈ Q_r R_r, so B = Q_r and A = R_r Pᵀ: cheaper,
but only as close as the chosen columns allow. `extract_lora(method="qr")` builds it, so the two
can be measured side by side.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import scipy.linalg
import torch
from torch import nn

from lorakit.lora import linear_names, matches_target
from lorakit.pipeline import LORA_TARGETS


def _targeted(model: nn.Module, targets: Iterable[str]) -> list[str]:
    targets = list(targets)
    return [n for n in linear_names(model) if any(matches_target(n, t) for t in targets)]


def weight_deltas(base: nn.Module, tuned: nn.Module, targets: Iterable[str]) -> dict[str, torch.Tensor]:
    """ΔW = W_tuned - W_base for every targeted Linear; (out, in) each."""
    names = _targeted(base, targets)
    if not names:
        raise ValueError(f"no nn.Linear in the model matches {list(targets)}")
    base_modules, tuned_modules = dict(base.named_modules()), dict(tuned.named_modules())
    deltas = {}
    for name in names:
        if name not in tuned_modules or tuned_modules[name].weight.shape != base_modules[name].weight.shape:
            raise ValueError(f"{name}: the tuned model has no Linear of the same shape; are they the same architecture?")
        deltas[name] = (tuned_modules[name].weight - base_modules[name].weight).detach().float()
    return deltas


EXTRACT_METHODS = ("svd", "qr")


def low_rank_factors(delta: torch.Tensor, rank: int, method: str = "svd") -> tuple[torch.Tensor, torch.Tensor]:
    """B (out, r) and A (r, in) with B @ A ≈ delta: truncated SVD, or QR with column pivoting."""
    if method == "svd":
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)  # (out, k), (k,), (k, in)
        root = S[:rank].sqrt()
        return (U[:, :rank] * root).contiguous(), (root[:, None] * Vh[:rank]).contiguous()
    if method == "qr":
        q, r, perm = scipy.linalg.qr(delta.double().numpy(), mode="economic", pivoting=True)  # delta[:, perm] = q @ r
        a = np.zeros((rank, delta.shape[1]))
        a[:, perm] = r[:rank]  # undo the column permutation: B @ A ≈ delta
        return torch.from_numpy(q[:, :rank]).to(delta.dtype).contiguous(), torch.from_numpy(a).to(delta.dtype)
    raise ValueError(f"method must be one of {EXTRACT_METHODS}, got {method!r}")


@torch.no_grad()
def extract_lora(
    base: nn.Module, tuned: nn.Module, rank: int, targets: Iterable[str] = LORA_TARGETS, method: str = "svd"
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Rank-r LoRA factors of tuned - base (peft key names, alpha = rank so the scale is 1).

    Returns the state dict and, per layer, the share of ΔW's energy the rank keeps, 1 - ‖ΔW - BA‖² / ‖ΔW‖²
    (for SVD the top r of the σ², by Eckart–Young the most any rank-r matrix keeps). `method` is "svd"
    or "qr" (column-pivoted). Load the result with `add_lora(model, targets, rank, alpha=rank)` and
    `load_lora_state_dict`, or into peft with `set_peft_model_state_dict`.
    """
    if method not in EXTRACT_METHODS:
        raise ValueError(f"method must be one of {EXTRACT_METHODS}, got {method!r}")
    deltas = weight_deltas(base, tuned, targets)
    widest = min(min(d.shape) for d in deltas.values())
    if not 1 <= rank <= widest:
        raise ValueError(f"rank must be between 1 and {widest} (the smallest targeted layer's min(out, in)), got {rank}")
    state, energy = {}, {}
    for name, delta in deltas.items():
        B, A = low_rank_factors(delta, rank, method)
        state[f"{name}.lora_B.weight"], state[f"{name}.lora_A.weight"] = B, A  # (out, r), (r, in)
        total = delta.pow(2).sum()
        energy[name] = (1 - (delta - B @ A).pow(2).sum() / total).item() if total > 0 else 1.0
    return state, energy


def effective_rank(matrix: torch.Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007): exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(matrix.detach().float())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
