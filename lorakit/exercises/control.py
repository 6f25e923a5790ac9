"""Notebook 07's exercises: a slider's prompt triple, the slider's target and ESD's target."""

from __future__ import annotations

from dataclasses import astuple
from typing import Callable

import torch

from lorakit.check import never_raises, report
from lorakit.control import esd_target, slider_target, slider_targets
from lorakit.seeds import seeded

SHAPE = (4, 4, 8, 8)  # frozen noise predictions for a small batch (B, C, H, W)


def reference_slider_prompts(colour: str, shape: str) -> tuple[str, str, str]:
    """(c, c+, c-) of a size slider: the prompt, and the same prompt with "large" / "small" (`slider_targets`)."""
    return astuple(slider_targets("large", "small", [colour], [shape])[0])


def reference_slider_target(e_c: torch.Tensor, e_plus: torch.Tensor, e_minus: torch.Tensor, scale: float,
                            eta: float = 1.0) -> torch.Tensor:
    """The kit's `lorakit.control.slider_target`."""
    return slider_target(e_c, e_plus, e_minus, scale, eta)


def reference_esd_target(e_concept: torch.Tensor, e_anchor: torch.Tensor, eta: float = 1.0) -> torch.Tensor:
    """The kit's `lorakit.control.esd_target`."""
    return esd_target(e_concept, e_anchor, eta)


def _predictions(seed: int, n: int) -> list[torch.Tensor]:
    with seeded(seed):
        return [torch.randn(SHAPE) for _ in range(n)]


@never_raises
def check_slider_prompts(slider_prompts: Callable[[str, str], tuple[str, str, str]]) -> bool:
    """Check slider_prompts(colour, shape) -> (c, c+, c-) for a size slider."""
    got = slider_prompts("red", "circle")
    want = reference_slider_prompts("red", "circle")
    if not (isinstance(got, (tuple, list)) and len(got) == 3 and all(isinstance(p, str) for p in got)):
        return report(False, f"return three prompts (c, c_plus, c_minus), e.g. {want}; got {got!r}")
    got = tuple(got)
    if got == want:
        return report(True, f"{got}: the two prompts differ in the size word only, so their difference is 'size'")
    if got == (want[0], want[2], want[1]):
        return report(False, "c+ and c- are swapped: the slider would make objects smaller as its scale grows; "
                             "c+ is the 'large' prompt")
    if got[0] != want[0]:
        return report(False, f"c is the plain prompt the adapter sees, without a size word: {want[0]!r}")
    return report(False, f"c+ and c- should be the prompt with 'large' and with 'small' in front of the colour, "
                         f"as the training captions say sizes ({want[1]!r}); they must differ in that one word")


@never_raises
def check_slider_target(target: Callable[..., torch.Tensor]) -> bool:
    """Check slider_target(e_c, e_plus, e_minus, scale, eta) -> the slider's training target."""
    e_c, e_plus, e_minus = _predictions(7, 3)
    s, eta = -0.5, 2.0  # a negative scale, and values that keep every typical mistake apart
    got = target(e_c, e_plus, e_minus, s, eta)
    if not isinstance(got, torch.Tensor) or got.shape != e_c.shape:
        return report(False, f"return one prediction of shape {tuple(e_c.shape)}")
    if torch.allclose(got, slider_target(e_c, e_plus, e_minus, s, eta), atol=1e-6):
        return report(True, "ε(c) + s·η·(ε(c+) - ε(c-)): at s = 0 the frozen model, at s = -1 the other way")
    if torch.allclose(got, slider_target(e_c, e_minus, e_plus, s, eta), atol=1e-6):
        return report(False, "the direction is reversed: it is ε(c+) - ε(c-), towards the 'large' prompt")
    if any(torch.allclose(got, e_c + k * (e_plus - e_minus), atol=1e-6) for k in (eta, s, 1.0)):
        return report(False, "use both the scale s and the strength η: the target moves s·η along the direction, "
                             "so the adapter at scale -1 learns the opposite push")
    if torch.allclose(got, s * eta * (e_plus - e_minus), atol=1e-6):
        return report(False, "start from the frozen prediction for c: the target is ε(c) plus the push")
    return report(False, "the slider's target is ε(c) + s·η·(ε(c+) - ε(c-))")


@never_raises
def check_esd_target(target: Callable[..., torch.Tensor]) -> bool:
    """Check esd_target(e_concept, e_anchor, eta) -> ESD's training target."""
    e_concept, e_anchor = _predictions(8, 2)
    got = target(e_concept, e_anchor, 1.5)
    if not isinstance(got, torch.Tensor) or got.shape != e_concept.shape:
        return report(False, f"return one prediction of shape {tuple(e_concept.shape)}")
    if torch.allclose(got, esd_target(e_concept, e_anchor, 1.5), atol=1e-6):
        return report(True, "ε(anchor) - η·(ε(concept) - ε(anchor)): negative guidance, away from the concept")
    if torch.allclose(got, e_anchor + 1.5 * (e_concept - e_anchor), atol=1e-6):
        return report(False, "that is classifier-free guidance *towards* the concept; ESD pushes away from it: "
                             "minus η·(ε(concept) - ε(anchor))")
    if torch.allclose(got, e_concept - 1.5 * (e_concept - e_anchor), atol=1e-6):
        return report(False, "start from the anchor's prediction, ε(anchor), not the concept's")
    if torch.allclose(got, e_anchor - (e_concept - e_anchor), atol=1e-6):
        return report(False, "scale the push by η (the erasure strength)")
    return report(False, "ESD's target is ε(anchor) - η·(ε(concept) - ε(anchor))")
