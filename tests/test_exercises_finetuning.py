"""Notebook 03's exercises: each typical mistake gets its own hint (every reference passing, every stub
"not written yet" and the reference handed on: tests/test_exercises.py)."""

import pytest
import torch

from lorakit.exercises import finetuning as ex


def test_the_counts_match_what_a_real_lora_run_holds():
    """The reference counts a rank-4 LoRA's parameters and AdamW state exactly as training_bytes measures them."""
    from torch import nn

    from lorakit.memory import training_bytes

    layers = [nn.Linear(i, o, bias=False) for o, i in ex.SHAPES]
    params = [p for layer in layers for p in (nn.Parameter(torch.randn(ex.RANK, layer.in_features)),
                                              nn.Parameter(torch.zeros(layer.out_features, ex.RANK)))]
    opt = torch.optim.AdamW(params)
    sum(p.sum() for p in params).backward()
    opt.step()
    measured = training_bytes(params, opt)
    assert ex.reference_lora_counts(ex.SHAPES, ex.RANK) == (measured.trainable_params, measured.optimizer_bytes)


def _counts(params_fn, state_fn):
    return lambda shapes, r: (params_fn(shapes, r), state_fn(params_fn(shapes, r), len(shapes)))


LORA_PARAMS = lambda shapes, r: sum(r * (o + i) for o, i in shapes)  # noqa: E731


@pytest.mark.parametrize("answer, hint", [
    (_counts(lambda s, r: sum(o * i for o, i in s), lambda n, k: 8 * n + 8 * k), "full weight count"),
    (_counts(lambda s, r: sum(r * o * i for o, i in s), lambda n, k: 8 * n + 8 * k), "multiplies all three sizes"),
    (_counts(lambda s, r: sum(r * i for o, i in s), lambda n, k: 8 * n + 8 * k), "only one factor"),
    (_counts(LORA_PARAMS, lambda n, k: 8 * n), "step"),
    (_counts(LORA_PARAMS, lambda n, k: 4 * n), "two moments"),
    (_counts(LORA_PARAMS, lambda n, k: 2 * n), "4 bytes"),
    (lambda shapes, r: LORA_PARAMS(shapes, r), "return a pair"),
])
def test_count_mistakes_are_named(answer, hint, capsys):
    assert not ex.check_lora_counts(answer)
    assert hint in capsys.readouterr().out


def _entropy_rank(normalise, log=torch.log, exp=torch.exp, drop_zeros=True):
    def rank(m):
        s = torch.linalg.svdvals(m)
        p = normalise(s)
        p = p[p > 0] if drop_zeros else p
        return float(exp(-(p * log(p)).sum()))
    return rank


@pytest.mark.parametrize("answer, hint", [
    (_entropy_rank(lambda s: s / s.sum(), exp=lambda h: h), "exp(H)"),
    (_entropy_rank(lambda s: s**2 / (s**2).sum()), "normalised σ²"),
    (_entropy_rank(lambda s: s / s.sum(), log=torch.log2), "mixed bases"),
    (_entropy_rank(lambda s: s / s.sum(), drop_zeros=False), "0 · log 0"),
    (lambda m: float((torch.linalg.svdvals(m) ** 2).sum() / torch.linalg.svdvals(m)[0] ** 2), "stable rank"),
])
def test_effective_rank_mistakes_are_named(answer, hint, capsys):
    assert not ex.check_effective_rank(answer)
    assert hint in capsys.readouterr().out


def _svd(build):
    def low_rank(delta, r):
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
        return build(U, S, Vh, r)
    return low_rank


@pytest.mark.parametrize("answer, hint", [
    (_svd(lambda U, S, Vh, r: (U[:, -r:] * S[-r:], Vh[-r:])), "smallest"),
    (_svd(lambda U, S, Vh, r: (U[:, :r], Vh[:r])), "Σ is missing"),
    (_svd(lambda U, S, Vh, r: (U[:, :r] * S[:r], S[:r, None] * Vh[:r])), "Σ appears twice"),
    (_svd(lambda U, S, Vh, r: (Vh[:r], U[:, :r] * S[:r])), "swapped"),
    (_svd(lambda U, S, Vh, r: (U[:, :r].flip(1) * S[:r].flip(0), Vh[:r].flip(0))), "not in order"),
    (_svd(lambda U, S, Vh, r: (U[:, :r] * S[:r], Vh.T[:r])), "shapes"),
])
def test_low_rank_mistakes_are_named(answer, hint, capsys):
    assert not ex.check_low_rank(answer)
    assert hint in capsys.readouterr().out
