"""Notebook 01's exercises: noising a latent, the noise-prediction loss, classifier-free guidance."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lorakit.check import never_raises, report
from lorakit.seeds import seeded

SHAPE = (3, 4, 8, 8)  # a small batch of latents (B, C, H, W)


def reference_add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t) · x0 + sqrt(1 - ᾱ_t) · ε, with ᾱ_t one number per sample (B,)."""
    a = alpha_bar.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1), broadcast over C, H, W
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def reference_noise_loss(unet: Callable[..., object], noisy: torch.Tensor, t: torch.Tensor, text: torch.Tensor,
                         noise: torch.Tensor) -> torch.Tensor:
    """The mean squared error between the UNet's noise prediction and the noise that was added."""
    return F.mse_loss(unet(noisy, t, encoder_hidden_states=text).sample, noise)


def reference_guide(eps_uncond: torch.Tensor, eps_text: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ε_uncond + g · (ε_text - ε_uncond); g = 1 is the prompt's own prediction."""
    return eps_uncond + scale * (eps_text - eps_uncond)


def _tensors(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with seeded(seed):
        return torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE[0]) * 0.9 + 0.05


@never_raises
def check_add_noise(add_noise: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Check add_noise(x0, noise, alpha_bar) -> x_t, alpha_bar of shape (B,)."""
    x0, noise, ab = _tensors(3)
    got = add_noise(x0, noise, ab)
    if not isinstance(got, torch.Tensor) or got.shape != x0.shape:
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        return report(False, f"x_t should have the latents' shape {tuple(x0.shape)}, got {shape}: ᾱ_t is one number per "
                             "sample, shape (B,); view it as (B, 1, 1, 1) so it broadcasts over C, H and W")
    a = ab.view(-1, 1, 1, 1)
    if torch.allclose(got, reference_add_noise(x0, noise, ab), atol=1e-6):
        return report(True, "x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε, as DDPMScheduler.add_noise computes it")
    if torch.allclose(got, a * x0 + (1 - a) * noise, atol=1e-6):
        return report(False, "take square roots: the weights are sqrt(ᾱ_t) and sqrt(1-ᾱ_t), so that the variance "
                             "of x_t stays 1 (their squares add up to 1)")
    if torch.allclose(got, (1 - a).sqrt() * x0 + a.sqrt() * noise, atol=1e-6):
        return report(False, "the weights are swapped: ᾱ_t near 1 (small t) must keep the image, so x0 gets sqrt(ᾱ_t)")
    return report(False, "x_t should be sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε, with ᾱ_t viewed as (B, 1, 1, 1)")


class _TinyUNet(nn.Module):
    """A stand-in with the UNet's call signature: unet(x, t, encoder_hidden_states=...).sample."""

    def __init__(self) -> None:
        super().__init__()
        with seeded(4):
            self.conv = nn.Conv2d(SHAPE[1], SHAPE[1], 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        bias = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) / 1000
        return SimpleNamespace(sample=self.conv(x) + bias)  # (B, C, H, W), like UNet2DConditionOutput


@never_raises
def check_noise_loss(noise_loss: Callable[..., torch.Tensor]) -> bool:
    """Check noise_loss(unet, noisy, t, text, noise) -> scalar MSE against the noise."""
    unet = _TinyUNet()
    x0, noise, ab = _tensors(5)
    noisy = reference_add_noise(x0, noise, ab)
    t, text = torch.tensor([10, 500, 990]), torch.randn(SHAPE[0], 6, 8)
    got = noise_loss(unet, noisy, t, text, noise)
    if not isinstance(got, torch.Tensor) or got.ndim != 0:
        return report(False, "the loss must be one number (a 0-dim tensor), the mean over every element: "
                             "F.mse_loss(prediction, target)")
    if not got.requires_grad:
        return report(False, "the loss does not depend on the UNet's weights: compute it from the UNet's prediction, "
                             "inside autograd (no torch.no_grad(), no .detach())")
    pred = unet(noisy, t, encoder_hidden_states=text).sample
    with torch.no_grad():
        if torch.allclose(got, F.mse_loss(pred, noise), atol=1e-6):
            return report(True, "MSE between the predicted and the added noise: SD 1.5's training loss")
        if torch.allclose(got, F.mse_loss(pred, x0), atol=1e-6):
            return report(False, "SD 1.5 predicts the noise ε, not the clean latent x0: the target is the noise")
        if torch.allclose(got, F.mse_loss(pred, noisy), atol=1e-6):
            return report(False, "the target is the noise that was added, not the noisy latent")
        if torch.allclose(got, F.mse_loss(pred, noise, reduction="sum"), atol=1e-3):
            return report(False, "you summed the squared errors; take the mean, so the loss does not grow with the "
                                 "batch or image size (F.mse_loss's default)")
    return report(False, "the loss should be F.mse_loss(unet(noisy, t, encoder_hidden_states=text).sample, noise)")


@never_raises
def check_guide(guide: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check guide(eps_uncond, eps_text, scale) -> the guided noise prediction."""
    eps_u, eps_c, _ = _tensors(6)
    g = 3.0
    got = guide(eps_u, eps_c, g)
    if not isinstance(got, torch.Tensor) or got.shape != eps_u.shape:
        return report(False, f"return one prediction of the same shape as each input, {tuple(eps_u.shape)}")
    if torch.allclose(got, reference_guide(eps_u, eps_c, g), atol=1e-6):
        if torch.allclose(guide(eps_u, eps_c, 1.0), eps_c, atol=1e-6):
            return report(True, "ε_uncond + g·(ε_text - ε_uncond): at g = 1 it is the prompt's own prediction")
    if torch.allclose(got, eps_c + g * (eps_u - eps_c), atol=1e-6):
        return report(False, "the push goes the wrong way: start from ε_uncond and move *towards* the prompt, "
                             "ε_uncond + g·(ε_text - ε_uncond)")
    if torch.allclose(got, g * (eps_c - eps_u), atol=1e-6):
        return report(False, "only the difference: add it to ε_uncond, or the prediction loses its scale")
    if torch.allclose(got, g * eps_c, atol=1e-6) or torch.allclose(got, eps_u + g * eps_c, atol=1e-6):
        return report(False, "guidance scales the *difference* between the two predictions, ε_text - ε_uncond")
    return report(False, "the guided prediction is ε_uncond + g·(ε_text - ε_uncond)")
