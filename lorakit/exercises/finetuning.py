"""Notebook 03's exercises: LoRA's parameter and optimizer-state counts, the effective rank of ΔW, and a
rank-r LoRA extracted from ΔW by truncated SVD; each with its check and reference."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from lorakit.check import never_raises, report
from lorakit.extract import effective_rank, low_rank_factors
from lorakit.seeds import seeded

FLOAT32 = 4  # bytes
SHAPES = [(48, 48), (48, 48), (64, 48), (48, 32), (96, 32)]  # (out, in) of a few made-up targeted layers
RANK = 4


def reference_lora_counts(shapes: Sequence[tuple[int, int]], rank: int) -> tuple[int, int]:
    """The reference answer to exercise 1: (trainable parameters, AdamW state bytes) of rank-r LoRAs on these layers."""
    params = sum(rank * (n_out + n_in) for n_out, n_in in shapes)  # B (out, r) + A (r, in) per layer
    tensors = 2 * len(shapes)  # A and B
    return params, 2 * FLOAT32 * params + FLOAT32 * tensors  # exp_avg + exp_avg_sq, and a float32 step per tensor


@never_raises
def check_lora_counts(count_fn: Callable[[Sequence[tuple[int, int]], int], tuple[int, int]]) -> bool:
    """Check a learner's lora_counts(shapes, rank) -> (trainable parameters, AdamW state bytes)."""
    got = count_fn(list(SHAPES), RANK)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return report(False, f"return a pair (parameters, optimizer bytes), got {type(got).__name__}")
    params, state = (int(v) for v in got)
    want_params, want_state = reference_lora_counts(SHAPES, RANK)
    weights = sum(o * i for o, i in SHAPES)
    if params != want_params:
        if params == weights:
            return report(False, "that is the layers' full weight count, what full fine-tuning trains; LoRA trains "
                                 "B (out × r) and A (r × in) per layer")
        if params == RANK * weights:
            return report(False, "r · out · in multiplies all three sizes; each layer stores B (out × r) and A "
                                 "(r × in): r · out + r · in")
        if params in (sum(RANK * i for _, i in SHAPES), sum(RANK * o for o, _ in SHAPES)):
            return report(False, "only one factor is counted: each layer has A (r × in) and B (out × r)")
        return report(False, f"parameters: got {params:,}, expected {want_params:,} = Σ r · (out + in) over the layers")
    if state == want_state:
        return report(True, f"{params:,} parameters; AdamW keeps {state:,} bytes: two float32 moments per number "
                            "and a step counter per tensor")
    if state == 2 * FLOAT32 * params:
        return report(False, f"{state:,} bytes is the two moments; PyTorch's AdamW also keeps a `step` counter "
                             "(a float32 scalar tensor) for each parameter tensor: A and B of every layer")
    if state in (FLOAT32 * params, FLOAT32 * params + FLOAT32 * 2 * len(SHAPES)):
        return report(False, "AdamW keeps two moments per number (exp_avg and exp_avg_sq), not one")
    if state in (2 * params, 2 * params + 2 * len(SHAPES)):
        return report(False, "the moments are counted as numbers, not bytes: a float32 takes 4 bytes")
    return report(False, f"optimizer bytes: got {state:,}, expected {want_state:,} (two float32 moments per "
                         "parameter, plus a float32 step counter per parameter tensor)")


def reference_effective_rank(matrix: torch.Tensor) -> float:
    """The reference answer to exercise 2: the kit's `lorakit.extract.effective_rank`."""
    return effective_rank(matrix)


def _test_matrices() -> list[torch.Tensor]:
    with seeded(3):
        full = torch.randn(12, 10)
        low = torch.randn(12, 3) @ torch.randn(3, 10)  # rank 3: seven singular values are (numerically) zero
        skewed = torch.randn(12, 10) * torch.logspace(0, -3, 10)  # one direction dominates
    exact = torch.zeros(8, 8)
    exact[0, 0], exact[1, 1] = 1.0, 1.0  # two equal directions, the rest exactly zero: effective rank 2
    return [full, low, skewed, exact]


@never_raises
def check_effective_rank(rank_fn: Callable[[torch.Tensor], float]) -> bool:
    """Check a learner's effective_rank(matrix) -> exp of the entropy of the normalised singular values."""
    for m in _test_matrices():
        got, want = float(rank_fn(m.clone())), effective_rank(m)
        if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-5):
            continue
        s = torch.linalg.svdvals(m)
        s = s[s > 0]
        if math.isnan(got):
            return report(False, "NaN: a zero singular value gives 0 · log 0; drop the zeros (p = p[p > 0]) "
                                 "before the entropy, since 0 · log 0 counts as 0")
        p, q = s / s.sum(), s**2 / (s**2).sum()
        entropy = float(-(p * p.log()).sum())
        if math.isclose(got, entropy, rel_tol=1e-4):
            return report(False, "that is the entropy H; the effective rank is exp(H), a number of directions")
        if math.isclose(got, float(torch.exp(-(q * q.log()).sum())), rel_tol=1e-4):
            return report(False, "you normalised σ²: Roy & Vetterli normalise the singular values themselves, "
                                 "p_i = σ_i / Σ σ_j")
        if math.isclose(got, float(torch.exp(-(p * p.log2()).sum())), rel_tol=1e-4):
            return report(False, "mixed bases: with log2 the effective rank is 2 ** H; with the natural log, exp(H)")
        if math.isclose(got, float((s**2).sum() / s[0] ** 2), rel_tol=1e-4):
            return report(False, "that is the stable rank ‖M‖²_F / σ₁², another summary; here it is exp of the "
                                 "entropy of p_i = σ_i / Σ σ_j")
        return report(False, f"on a {tuple(m.shape)} matrix: got {got:.4f}, expected {want:.4f} = "
                             "exp(−Σ p_i log p_i) with p_i = σ_i / Σ σ_j")
    return report(True, "matches: an n×n identity would give n, a rank-1 matrix 1, and a ΔW somewhere between")


def reference_low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference answer to exercise 3: the kit's truncated-SVD factors, B (out, r) and A (r, in)."""
    return low_rank_factors(delta, rank, "svd")


@never_raises
def check_low_rank(factor_fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Check a learner's low_rank(delta, rank) -> (B, A), the truncated SVD of delta split into two factors."""
    with seeded(4):
        delta = torch.randn(10, 4) @ torch.diag(torch.tensor([5.0, 3.0, 2.0, 1.0])) @ torch.randn(4, 12) \
            + 0.05 * torch.randn(10, 12)  # (out, in): four strong directions, a little noise
    r = 2
    got = factor_fn(delta.clone(), r)
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return report(False, f"return a pair (B, A), got {type(got).__name__}")
    B, A = (torch.as_tensor(f).float() for f in got)  # a float64 answer is fine too
    if B.shape == (r, delta.shape[1]) and A.shape == (delta.shape[0], r):
        return report(False, "B and A are swapped: B is (out, r) and A is (r, in), so that ΔW ≈ B @ A")
    if B.shape != (delta.shape[0], r) or A.shape != (r, delta.shape[1]):
        return report(False, f"shapes: B {tuple(B.shape)}, A {tuple(A.shape)}; expected B (out, r) = "
                             f"{(delta.shape[0], r)} and A (r, in) = {(r, delta.shape[1])}")
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)  # (out, k), (k,), (k, in)
    best = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]
    product = B @ A
    if torch.allclose(product, best, atol=1e-4):
        first = B[:, :1] @ A[:1]
        if not torch.allclose(first, U[:, :1] * S[0] @ Vh[:1], atol=1e-4):
            return report(False, "B @ A is right, but its columns are not in order of singular value: the rank-1 "
                                 "LoRA inside it (B[:, :1] @ A[:1]) should be the largest direction")
        return report(True, "B @ A is the truncated SVD, the closest rank-r matrix to ΔW (Eckart–Young)")
    if torch.allclose(product, U[:, -r:] @ torch.diag(S[-r:]) @ Vh[-r:], atol=1e-4):
        return report(False, "you kept the r smallest singular values; torch.linalg.svd sorts them in decreasing "
                             "order, so keep the first r")
    if torch.allclose(product, U[:, :r] @ Vh[:r], atol=1e-4):
        return report(False, "Σ is missing: ΔW ≈ U_r Σ_r V_rᵀ; put Σ_r into B or A (or Σ_r^½ into each)")
    if torch.allclose(product, U[:, :r] @ torch.diag(S[:r] ** 2) @ Vh[:r], atol=1e-4):
        return report(False, "Σ appears twice: split it once, e.g. B = U_r Σ_r^½ and A = Σ_r^½ V_rᵀ")
    return report(False, "B @ A differs from the rank-r truncated SVD U_r Σ_r V_rᵀ; take the first r columns of U, "
                         "the first r singular values and the first r rows of Vh")
