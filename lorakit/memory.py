"""Memory accounting that is honest on a CPU: bytes counted from tensors, peaks measured."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import psutil
import torch


@dataclass
class TrainingBytes:
    """What training a set of parameters holds in memory besides the model, counted from tensors."""

    trainable_params: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int


def training_bytes(params: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer | None = None) -> TrainingBytes:
    """Trainable parameters, their gradients and the optimizer's state (e.g. AdamW's two moments), in bytes.

    Gradients are counted as one per trainable parameter (they exist during every step). The optimizer
    state is read from `optimizer.state`, so call it after at least one step.
    """
    params = [p for p in params if p.requires_grad]
    n = sum(p.numel() for p in params)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    opt_bytes = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            opt_bytes += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return TrainingBytes(n, param_bytes, param_bytes, opt_bytes)


@dataclass
class SavedBytes:
    """What autograd kept for the backward pass during a `saved_for_backward` block, filled in when it ends."""

    bytes: int = 0
    tensors: int = 0


@contextmanager
def saved_for_backward(*modules: torch.nn.Module) -> Iterator[SavedBytes]:
    """Count the activations autograd keeps for backward while the block runs forward passes.

    Each storage is counted once; storages of the given modules' parameters and buffers (weights kept
    to pass gradients through a layer, already in memory) are left out, so what remains is what the
    step adds.
    """
    own = {t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}
    storages: dict[int, int] = {}
    result = SavedBytes()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result.bytes, result.tensors = sum(storages.values()), len(storages)


@dataclass
class PeakMemory:
    """Peak memory above the level at entry, filled in when the `measure_peak_memory` block ends."""

    device: str
    peak_bytes: int = 0


@contextmanager
def measure_peak_memory(device: str | torch.device = "cpu", interval: float = 0.005) -> Iterator[PeakMemory]:
    """Measure how far memory rises during a block: CUDA's allocator peak, or the process's RSS sampled on a thread."""
    device = torch.device(device)
    result = PeakMemory(str(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result.peak_bytes = torch.cuda.max_memory_allocated(device) - start
        return
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result.peak_bytes = peak[0] - start
