"""Extracting a LoRA from a full fine-tune: truncated SVD (the closest rank r) against pivoted QR."""

import pytest
import torch
from torch import nn

from lorakit.extract import effective_rank, extract_lora, low_rank_factors, weight_deltas
from lorakit.lora import add_lora, load_lora_state_dict


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleDict({"to_q": nn.Linear(12, 10), "to_v": nn.Linear(12, 10)})

    def forward(self, x):
        return self.block["to_q"](x) + self.block["to_v"](x)


def _tuned_pair(seed: int, update) -> tuple[_Net, _Net]:
    """A network and a copy whose Linear weights moved by update(weight)."""
    torch.manual_seed(seed)
    base, tuned = _Net(), _Net()
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for m in tuned.block.values():
            m.weight += update(m.weight)
    return base, tuned


def test_extract_at_full_rank_reproduces_delta_and_error_falls_with_rank():
    base, tuned = _tuned_pair(0, lambda w: 0.1 * torch.randn_like(w))  # a full-rank update
    deltas = weight_deltas(base, tuned, ["to_q", "to_v"])
    errors = []
    for rank in range(1, 11):
        state, energy = extract_lora(base, tuned, rank, targets=["to_q", "to_v"])
        err = sum((deltas[n] - state[f"{n}.lora_B.weight"] @ state[f"{n}.lora_A.weight"]).norm() ** 2 for n in deltas)
        errors.append(err.sqrt().item())
        assert all(0 < e <= 1 + 1e-6 for e in energy.values())
    assert errors[-1] < 1e-5 and all(a >= b - 1e-7 for a, b in zip(errors, errors[1:]))
    assert energy["block.to_q"] == pytest.approx(1.0)


def test_extracted_lora_loads_as_an_ordinary_adapter():
    base, tuned = _tuned_pair(1, lambda w: torch.randn(10, 2) @ torch.randn(2, 12))  # a rank-2 update
    state, _ = extract_lora(base, tuned, rank=2, targets=["to_q", "to_v"])
    add_lora(base, ["to_q", "to_v"], rank=2, alpha=2)
    load_lora_state_dict(base, state)
    x = torch.randn(5, 12)
    assert torch.allclose(base(x), tuned(x), atol=1e-4)


def test_extract_errors():
    with pytest.raises(ValueError, match="rank must be between 1 and 10"):
        extract_lora(_Net(), _Net(), rank=11, targets=["to_q"])
    with pytest.raises(ValueError, match="no nn.Linear"):
        extract_lora(_Net(), _Net(), rank=1, targets=["to_k"])


def test_effective_rank_known_answers():
    assert effective_rank(torch.eye(6)) == pytest.approx(6.0)
    assert effective_rank(torch.randn(8, 1) @ torch.randn(1, 5)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("method", ["svd", "qr"])
def test_both_methods_are_exact_at_full_rank_and_on_a_low_rank_update(method):
    delta = torch.randn(10, 12, dtype=torch.float64)
    B, A = low_rank_factors(delta, 10, method)
    assert B.shape == (10, 10) and A.shape == (10, 12) and torch.allclose(B @ A, delta, atol=1e-10)
    low = torch.randn(10, 3, dtype=torch.float64) @ torch.randn(3, 12, dtype=torch.float64)
    B, A = low_rank_factors(low, 3, method)
    assert torch.allclose(B @ A, low, atol=1e-8)


@pytest.mark.parametrize("method", ["svd", "qr"])
def test_factors_are_nested_so_a_lower_rank_is_a_slice(method):
    delta = torch.randn(12, 9, dtype=torch.float64)
    B, A = low_rank_factors(delta, 9, method)
    for r in (1, 4):
        b, a = low_rank_factors(delta, r, method)
        assert torch.allclose(b @ a, B[:, :r] @ A[:r], atol=1e-12)


def test_svd_is_never_farther_than_pivoted_qr_and_qr_keeps_orthonormal_columns():
    torch.manual_seed(0)
    delta = torch.randn(40, 8, dtype=torch.float64) @ torch.diag(torch.linspace(3, 0.1, 8, dtype=torch.float64)) @ torch.randn(
        8, 30, dtype=torch.float64)  # rank 8, decaying spectrum
    for rank in range(1, 9):
        errors = {m: (delta - torch.matmul(*low_rank_factors(delta, rank, m))).norm().item() for m in ("svd", "qr")}
        assert errors["svd"] <= errors["qr"] + 1e-9, (rank, errors)  # Eckart–Young
    B, _ = low_rank_factors(delta, 5, "qr")
    assert torch.allclose(B.T @ B, torch.eye(5, dtype=torch.float64), atol=1e-10)


def test_qr_energy_is_measured_from_the_residual():
    base, tuned = _tuned_pair(2, lambda w: 0.1 * torch.randn_like(w))
    _, svd = extract_lora(base, tuned, 3, targets=["to_q"], method="svd")
    _, qr = extract_lora(base, tuned, 3, targets=["to_q"], method="qr")
    assert 0 < qr["block.to_q"] <= svd["block.to_q"] + 1e-6 < 1
    with pytest.raises(ValueError, match="method must be one of"):
        extract_lora(base, tuned, 3, targets=["to_q"], method="lu")
