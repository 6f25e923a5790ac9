"""Checks a learner runs on their own LoRA code in notebook 02; each failure comes with a precise hint.

The checks print their verdict and return True/False (they never raise), so an unfinished
exercise does not stop the notebook.
"""

from __future__ import annotations

import functools
import traceback
from typing import Callable

import torch
from torch import nn

from lorakit.seeds import seeded

IN, OUT, RANK, ALPHA = 12, 10, 3, 6.0


def _report(ok: bool, message: str) -> bool:
    print(("[OK] " if ok else "[HINT] ") + message)
    return ok


def _never_raises(check: Callable[..., bool]) -> Callable[..., bool]:
    """Turn anything the learner's code raises into a hint naming the error and the line it came from."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs) -> bool:
        try:
            return check(*args, **kwargs)
        except NotImplementedError:
            return _report(False, "not written yet (your code raises NotImplementedError): replace the "
                                  "`raise NotImplementedError` with your lines")
        except Exception as err:  # the learner's code, whatever it does, must not stop the notebook
            frames = traceback.extract_tb(err.__traceback__)
            where = next((f"line {f.lineno}: {f.line}" for f in reversed(frames) if "lorakit" not in f.filename), "")
            hint = ""
            if isinstance(err, RuntimeError) and ("shape" in str(err) or "size" in str(err)):
                hint = " — a shape mismatch: print the shapes of x, A and B; A is (rank, in), B is (out, rank)"
            return _report(False, f"your code raised {type(err).__name__}: {str(err)[:160]}"
                                  + (f" ({where})" if where else "") + hint)

    return wrapper


def _fresh_pair(layer_cls: Callable[..., nn.Module]) -> tuple[nn.Linear, nn.Module]:
    with seeded(0):
        base = nn.Linear(IN, OUT)
        return base, layer_cls(base, rank=RANK, alpha=ALPHA)


@_never_raises
def check_lora_layer(layer_cls: Callable[..., nn.Module]) -> bool:
    """Check a learner's LoRA layer class: built as layer_cls(base, rank, alpha), with lora_A, lora_B."""
    try:
        base, layer = _fresh_pair(layer_cls)
    except NotImplementedError:
        return _report(False, "the layer is not written yet (it raises NotImplementedError)")
    for name in ("lora_A", "lora_B"):
        if not isinstance(getattr(layer, name, None), torch.Tensor):
            return _report(False, f"the layer needs a parameter called {name}")
    A, B = layer.lora_A, layer.lora_B
    if A.shape == (IN, RANK) and B.shape == (RANK, OUT):
        return _report(False, f"A and B are transposed: A should be (rank, in) = {(RANK, IN)} and B (out, rank) = "
                              f"{(OUT, RANK)}, as in nn.Linear, whose weight is (out, in)")
    if A.shape != (RANK, IN) or B.shape != (OUT, RANK):
        return _report(False, f"shapes: lora_A is {tuple(A.shape)}, lora_B {tuple(B.shape)}; expected A (rank, in) = "
                              f"{(RANK, IN)} and B (out, rank) = {(OUT, RANK)}")
    if not (A.requires_grad and B.requires_grad):
        return _report(False, "A and B must be trainable (nn.Parameter with requires_grad=True)")
    if base.weight.requires_grad:
        return _report(False, "the base weight W is still trainable: freeze it (base.weight.requires_grad_(False)), "
                              "or training updates all of W and it is no longer LoRA")
    x = torch.randn(5, IN)
    with torch.no_grad():
        if not torch.equal(layer(x), base(x)):
            return _report(False, "a fresh adapter must change nothing: initialise B to zeros (and A randomly), so "
                                  "B @ A = 0 at the start")
        if torch.count_nonzero(A) == 0:
            return _report(False, "A is all zeros: with both A and B zero the gradients of both are zero and the "
                                  "adapter never learns; initialise A randomly")
        B.normal_()
        W, b = base.weight, base.bias
        got = layer(x)
        ref = x @ W.T + b + (ALPHA / RANK) * (x @ A.T @ B.T)
        if torch.allclose(got, ref, atol=1e-5):
            return _report(True, "your LoRA layer matches W x + (alpha / rank) · B A x")
        if torch.allclose(got, x @ W.T + b + x @ A.T @ B.T, atol=1e-5):
            return _report(False, "your output differs from the reference where B≠0 by a constant factor: did you "
                                  "apply the scale alpha / rank?")
        if torch.allclose(got, x @ W.T + b + ALPHA * (x @ A.T @ B.T), atol=1e-5):
            return _report(False, "you scaled by alpha; the scale is alpha / rank, so the update's size does not "
                                  "grow with the rank")
        if torch.allclose(got, (ALPHA / RANK) * (x @ A.T @ B.T), atol=1e-5):
            return _report(False, "the output is only the update: add the frozen layer's output W x + b")
    return _report(False, "your output differs from W x + (alpha / rank) · B A x where B≠0; check the order "
                          "x → A → B (first project down to rank r, then back up)")


@_never_raises
def check_merge(merge_fn: Callable[[nn.Linear, torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check a learner's merge(base, A, B, scaling) -> merged weight, (out, in)."""
    with seeded(1):
        base = nn.Linear(IN, OUT)
        A, B = torch.randn(RANK, IN), torch.randn(OUT, RANK)
    s = ALPHA / RANK
    W0 = base.weight.detach().clone()
    try:
        merged = merge_fn(base, A, B, s)
    except NotImplementedError:
        return _report(False, "merge is not written yet (it raises NotImplementedError)")
    except RuntimeError as err:
        return _report(False, f"merge raised {err!s:.80}: is it B @ A (out×r times r×in) rather than A @ B?")
    if not isinstance(merged, torch.Tensor) or merged.shape != W0.shape:
        shape = tuple(merged.shape) if isinstance(merged, torch.Tensor) else type(merged).__name__
        return _report(False, f"merge should return the merged weight of shape (out, in) = {tuple(W0.shape)}, got {shape}")
    if torch.allclose(merged, W0 + s * B @ A, atol=1e-5):
        x = torch.randn(4, IN)
        same = torch.allclose(x @ merged.T, x @ W0.T + s * (x @ A.T @ B.T), atol=1e-4)
        return _report(same, "merged weight W + s·BA gives the same outputs as the unmerged layer" if same
                       else "the merged weight is right but outputs differ; is the bias applied?")
    if torch.allclose(merged, W0 + B @ A, atol=1e-5):
        return _report(False, "the merged weight lacks the scale: W + (alpha / rank) · B @ A")
    if torch.allclose(merged, s * B @ A, atol=1e-5):
        return _report(False, "merge returned only the update: add it to the base weight W")
    if torch.allclose(merged, W0 - s * B @ A, atol=1e-5):
        return _report(False, "the sign is flipped: merging adds the update, W + s·BA")
    return _report(False, "the merged weight differs from W + (alpha / rank) · B @ A")
