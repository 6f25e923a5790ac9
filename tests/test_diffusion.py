"""The diffusion training primitives: fixed-draw losses agree with the training loss."""

import pytest
import torch

from lorakit.data import make_dataset
from lorakit.diffusion import denoising_loss, encode_data, per_sample_losses
from lorakit.pipeline import load_pipeline


@pytest.mark.slow
def test_per_sample_losses_are_fixed_draws_of_the_training_loss():
    pipe = load_pipeline(device="cpu")
    enc = encode_data(pipe, make_dataset(16, seed=0, include=["orange"]))
    a, b = per_sample_losses(pipe, enc, 24, seed=3), per_sample_losses(pipe, enc, 24, seed=3)
    assert a.shape == (24,) and torch.equal(a, b)  # the same draws every time
    assert not torch.equal(a, per_sample_losses(pipe, enc, 24, seed=4))
    with torch.no_grad():
        batch = denoising_loss(pipe, enc, 24, torch.Generator().manual_seed(3))  # same draws, cached text
    assert a.mean().item() == pytest.approx(batch.item(), rel=1e-4)
    with pytest.raises(ValueError):
        per_sample_losses(pipe, enc, 0, seed=0)
