"""Pick the compute device: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

_HINT = "use device='cpu' (or leave device unset to use the best one available)"


def device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: `prefer` if given (and available), else cuda, then mps, then cpu."""
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(prefer)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {prefer!r}: expected 'cpu', 'cuda', 'cuda:0' or 'mps'") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(prefer)!r} was asked for, but {why}; {_HINT}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(prefer)!r}: there are only {torch.cuda.device_count()} CUDA GPUs; {_HINT}")
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {str(prefer)!r} was asked for, but Apple's MPS is not available here; {_HINT}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(prefer)!r} is not supported by the kit; use 'cpu', 'cuda' or 'mps'")
    return dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
