"""Pick the compute device: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch


def device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: `prefer` if given, else cuda, then mps, then cpu."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
