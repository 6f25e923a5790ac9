"""Notebook 04's exercises: the Vendi score, early stopping on a validation curve, the prior-preservation loss."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from lorakit.check import never_raises, report
from lorakit.dreambooth import choose_checkpoint
from lorakit.metrics import vendi_score
from lorakit.seeds import seeded

SHAPE = (3, 4, 8, 8)  # one half of a DreamBooth batch: instance latents, or class latents (B, C, H, W)
Scores = dict[int, dict[str, float]]  # {step: {"fidelity": f, "diversity": d}}, as early_stopping_step returns them


# -- 1. the Vendi score ---------------------------------------------------------------------------

def reference_vendi(feats: np.ndarray) -> float:
    """The kit's `lorakit.metrics.vendi_score`: exp of the entropy of the eigenvalues of K/n, cosine kernel K."""
    return vendi_score(feats)


def _entropy_exp(eig: np.ndarray, log: Callable[[np.ndarray], np.ndarray] = np.log) -> float:
    eig = eig[eig > 1e-12]  # 0·log 0 = 0; round-off leaves the zero eigenvalues at ±1e-17
    return float(np.exp(-(eig * log(eig)).sum()))


def _vendi_features() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    scales = np.array([0.5, 1.0, 3.0, 1.5, 0.2, 2.0, 1.0, 4.0])[:, None]  # rows of different lengths
    return {
        "8 random samples in 5 dimensions": rng.normal(size=(8, 5)) * scales,  # (8, 5): K/n has 3 zero eigenvalues
        "6 copies of one sample": np.tile(rng.normal(size=(1, 4)), (6, 1)),  # (6, 4): should give 1
        "4 orthogonal samples": np.diag([1.0, 2.0, 0.5, 3.0]),  # (4, 4): should give 4
    }


def _as_number(got: object) -> float | None:
    try:
        value = float(got.item() if hasattr(got, "item") else got)  # a 0-dim tensor or array, or a float
    except (TypeError, ValueError, RuntimeError):  # an array or tensor of many numbers, a string, None
        return None
    return value


@never_raises
def check_vendi(vendi: Callable[[np.ndarray], float]) -> bool:
    """Check vendi(feats) -> the Vendi score of n feature vectors (n, d) under the cosine kernel."""
    cases = _vendi_features()
    for i, (what, feats) in enumerate(cases.items()):
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # log of a negative eigenvalue: the hint below says it instead
            got = _as_number(vendi(feats.copy()))
        want = vendi_score(feats)
        if got is None:
            return report(False, "return one number, the score (a float, e.g. float(np.exp(entropy)))")
        if np.isnan(got) or np.isinf(got):
            return report(False, f"your score is {got} for {what}: some eigenvalues of K/n are 0, and round-off makes "
                                 "them ±1e-17, so log gives -inf or NaN; Vendi takes 0·log 0 = 0: keep only the "
                                 "eigenvalues above 1e-12 before the entropy")
        if np.isclose(got, want, rtol=1e-4):
            continue
        x = feats / np.linalg.norm(feats, axis=1, keepdims=True)  # (n, d), unit rows
        n = len(x)
        if i == 0 and np.isclose(got, np.log(want), rtol=1e-4):
            return report(False, f"that is the entropy H = {got:.3f}; the Vendi score is exp(H) = {want:.3f}, the "
                                 "effective number of distinct samples")
        if np.isclose(got, _entropy_exp(np.linalg.eigvalsh(x @ x.T)), rtol=1e-4):
            return report(False, "divide K by n: the eigenvalues of K/n sum to trace(K)/n = 1, so they are a "
                                 "probability distribution whose entropy can be taken")
        if np.isclose(got, _entropy_exp(np.linalg.eigvalsh(feats @ feats.T / n)), rtol=1e-4):
            return report(False, "normalise each feature vector to length 1 first (x / ||x||): the cosine kernel "
                                 "K = x xᵀ then has ones on its diagonal, and only directions count, not lengths")
        if np.isclose(got, _entropy_exp(np.linalg.eigvalsh(x @ x.T / n), np.log2), rtol=1e-4):
            return report(False, "use the natural log: the score is exp(-Σ λ ln λ) "
                                 "(or 2 ** (-Σ λ log2 λ), the same)")
        return report(False, f"for {what} the Vendi score is {want:.4f}, yours {got:.4f}: normalise the rows, "
                             "K = x xᵀ, eigenvalues λ of K/n (np.linalg.eigvalsh), keep λ > 1e-12, "
                             "exp(-Σ λ ln λ)")
    return report(True, "exp of the entropy of K/n's eigenvalues: 1 for copies of one sample, n for n orthogonal "
                        "ones (the vendi-score package's vendi.score_X computes the same)")


# -- 2. early stopping ----------------------------------------------------------------------------

def reference_choose_checkpoint(scores: Scores, min_fidelity: float = 0.9) -> int:
    """The reference answer to exercise 2: the kit's rule, `lorakit.dreambooth.choose_checkpoint`."""
    return choose_checkpoint(scores, min_fidelity)


def _curve(fidelity: list[float], diversity: list[float]) -> Scores:
    return {25 * i: {"fidelity": f, "diversity": d} for i, (f, d) in enumerate(zip(fidelity, diversity))}


# (what the curve tests, fidelity per checkpoint, diversity per checkpoint), steps 0, 25, 50, ...
CURVES = [
    ("one checkpoint exactly at the bar", [0.0, 0.5, 0.8, 0.9, 1.0, 1.0, 1.0], [1.9, 2.4, 2.1, 1.8, 1.5, 1.6, 1.2]),
    ("a tie in diversity", [0.0, 0.6, 0.95, 1.0, 1.0, 1.0, 1.0], [2.0, 2.5, 1.3, 1.7, 1.4, 1.7, 1.1]),
    ("no checkpoint reaching the bar", [0.0, 0.3, 0.7, 0.8, 0.8, 0.6], [1.9, 2.4, 2.0, 1.6, 1.3, 1.2]),
]


@never_raises
def check_choose_checkpoint(choose: Callable[[Scores, float], int]) -> bool:
    """Check choose_checkpoint(scores, min_fidelity) -> the step to keep."""
    bar = 0.9
    for what, fidelity, diversity in CURVES:
        scores = _curve(fidelity, diversity)
        steps = list(scores)
        want = reference_choose_checkpoint(scores, bar)
        try:
            got = choose({s: dict(v) for s, v in scores.items()}, bar)
        except NotImplementedError:
            raise
        except Exception as err:
            if what.startswith("no checkpoint"):
                return report(False, f"with no checkpoint at fidelity >= {bar} your code raised "
                                     f"{type(err).__name__}: {str(err)[:80]}; fall back to the most faithful "
                                     "checkpoint (max fidelity) instead of failing")
            raise
        if got == want:
            continue
        faithful = [s for s in steps if scores[s]["fidelity"] >= bar]
        if got is None and not faithful:
            return report(False, f"with no checkpoint at fidelity >= {bar} you returned None: fall back to the most "
                                 "faithful checkpoint (max fidelity), so there is always a step to keep")
        if got not in steps and isinstance(got, (int, np.integer)) and 0 <= got < len(steps) and steps[got] == want:
            return report(False, f"return the step ({want}), the dict's key, not its position in the list ({got})")
        if not faithful:
            top = max(v["fidelity"] for v in scores.values())
            if got in steps and scores[got]["fidelity"] == top:
                return report(False, f"steps {', '.join(str(s) for s in steps if scores[s]['fidelity'] == top)} tie "
                                     f"on fidelity; keep the earliest ({want}): it is as good and less trained")
            return report(False, f"no checkpoint reaches fidelity {bar} here, so keep the most faithful one ({want}): "
                                 "an adapter that does not draw the instance has nothing to keep")
        if got == max(steps, key=lambda s: scores[s]["diversity"]):
            return report(False, f"step {got} is the most diverse of all, but its fidelity is "
                                 f"{scores[got]['fidelity']}: "
                                 f"an adapter that has not learned the instance yet is diverse for free; keep only "
                                 f"checkpoints with fidelity >= {bar}, then take the most diverse of those")
        if got == steps[-1]:
            return report(False, "you kept the last checkpoint, the most trained and the most collapsed (its "
                                 "training loss is the lowest, which is why the loss cannot choose): take the most "
                                 "diverse checkpoint among those that reach the fidelity bar")
        if got == next(s for s in steps if s in faithful):
            return report(False, f"step {got} is the first to reach the bar, but a later one is more diverse: take the "
                                 "most diverse of all the checkpoints that reach it, not the first")
        strict = [s for s in steps if scores[s]["fidelity"] > bar]
        if strict and got == max(strict, key=lambda s: scores[s]["diversity"]):
            return report(False, f"fidelity exactly {bar} reaches the bar: keep checkpoints with fidelity >= {bar} "
                                 "(at least), not >")
        if got == max(faithful, key=lambda s: scores[s]["fidelity"]):
            return report(False, f"step {got} is the most faithful; fidelity only has to reach the bar ({bar}), and "
                                 "among the checkpoints that reach it the most diverse is kept (the most faithful is "
                                 "the fallback when none reaches it)")
        best = max(scores[s]["diversity"] for s in faithful)
        if got in faithful and scores[got]["diversity"] == best:
            return report(False, f"steps {', '.join(str(s) for s in faithful if scores[s]['diversity'] == best)} tie "
                                 f"on diversity; keep the earliest ({want}): it is as good and less trained "
                                 "(max() over the steps in order does that; a loop with >= keeps the last)")
        return report(False, f"on a curve with {what} the checkpoint to keep is step {want}, you chose {got!r}: "
                             f"among the steps with fidelity >= {bar}, the most diverse (the earliest among ties)")
    return report(True, "the most diverse checkpoint that still draws the instance, the rule of "
                        "lorakit.dreambooth.early_stopping_step (notebook 04b runs it on validation samples)")


# -- 3. prior preservation ------------------------------------------------------------------------

def reference_prior_preservation_loss(pred: torch.Tensor, target: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """DreamBooth's loss on a batch of instance samples then as many class samples: instance MSE + weight · class MSE.

    The convention of diffusers' train_dreambooth_lora.py and of `lorakit.stacked.train_stacked` (instance half first,
    `Prior.weight` on the class half).
    """
    pred_instance, pred_prior = pred.chunk(2, dim=0)  # (2B, C, H, W) -> two (B, C, H, W)
    target_instance, target_prior = target.chunk(2, dim=0)
    return F.mse_loss(pred_instance, target_instance) + weight * F.mse_loss(pred_prior, target_prior)


@never_raises
def check_prior_preservation_loss(loss_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check prior_preservation_loss(pred, target, weight) -> a scalar loss, pred and target (2B, C, H, W)."""
    with seeded(11):
        pred = torch.randn(2 * SHAPE[0], *SHAPE[1:]).requires_grad_()  # (2B, C, H, W): instance half, then class half
        target = torch.randn(2 * SHAPE[0], *SHAPE[1:]) * 1.5
    weight = 0.5  # a λ that keeps every typical mistake apart
    got = loss_fn(pred, target, weight)
    if not isinstance(got, torch.Tensor) or got.ndim != 0:
        return report(False, "return one number, a 0-dim tensor: the instance loss plus λ times the prior loss (each "
                             "F.mse_loss of its half)")
    if not got.requires_grad:
        return report(False, "the loss does not depend on the predictions any more (a .item(), .detach() or "
                             "torch.no_grad()?): it must backpropagate into the adapter")
    p, q = pred.detach().chunk(2)
    t, u = target.detach().chunk(2)
    got = got.detach()
    mse = F.mse_loss
    mistakes = [
        (mse(p, t) + mse(q, u), "λ is missing: the prior term is weight · MSE of the class half (prior_loss_weight "
                                "in diffusers), so the instance loss counts 1 and the prior λ"),
        (mse(pred.detach(), target), "you averaged the whole batch (or the two halves): that weighs both halves "
                                     "equally; the loss is instance MSE + λ · class MSE, one F.mse_loss per half"),
        ((mse(p, t) + weight * mse(q, u)) / 2, "do not divide by 2: the loss is instance MSE + λ · class MSE"),
        (mse(p, t) + weight * mse(q, t), "the class half has its own target: compare the second half of pred with "
                                         "the second half of target (the noise added to the class images)"),
        (weight * mse(p, t) + mse(q, u), "the halves are swapped: the first half of the batch is the instance images, "
                                         "the second the class images, and λ weighs the class (prior) half; "
                                         "pred.chunk(2) gives (instance, prior) in that order"),
        (mse(pred.detach()[:, :2], target[:, :2]) + weight * mse(pred.detach()[:, 2:], target[:, 2:]),
         "you split the channels: split the batch, along dim 0 (pred.chunk(2, dim=0))"),
        (mse(pred.detach()[::2], target[::2]) + weight * mse(pred.detach()[1::2], target[1::2]),
         "the batch is not interleaved: its first half is the instance samples, its second half the class samples"),
        (F.mse_loss(p, t, reduction="sum") + weight * F.mse_loss(q, u, reduction="sum"),
         "take the mean squared error (F.mse_loss's default), not the sum: the loss should not grow with the batch"),
    ]
    got = got.to(torch.float32)  # a float64 answer is fine too
    if torch.allclose(got, reference_prior_preservation_loss(pred.detach(), target, weight), atol=1e-6):
        other = loss_fn(pred.detach(), target, 2.0)
        if torch.allclose(torch.as_tensor(other, dtype=torch.float32), reference_prior_preservation_loss(pred.detach(), target, 2.0), atol=1e-6):
            return report(True, "instance MSE + λ · class MSE on the two halves of one batch, as diffusers' "
                                "train_dreambooth_lora.py (--with_prior_preservation --prior_loss_weight)")
        return report(False, "right for weight 0.5 but not for weight 2: use the `weight` argument, not a number")
    for value, hint in mistakes:
        if torch.allclose(got, value, atol=1e-5):
            return report(False, hint)
    return report(False, "the loss is F.mse_loss(instance half of pred, of target) + weight · F.mse_loss(class half "
                         "of pred, of target), the halves from pred.chunk(2, dim=0)")
