"""Counting training bytes and measuring peak memory."""

import mmap
import time

import pytest
import torch
from torch import nn

from lorakit.memory import measure_peak_memory, saved_for_backward, training_bytes


def test_training_bytes_and_peak_memory():
    layer = nn.Linear(100, 50)
    opt = torch.optim.AdamW(layer.parameters())
    layer(torch.randn(3, 100)).sum().backward()
    opt.step()
    counted = training_bytes(layer.parameters(), opt)
    assert counted.trainable_params == 5050 and counted.param_bytes == 5050 * 4
    assert counted.optimizer_bytes >= 2 * 5050 * 4
    with measure_peak_memory("cpu") as peak:
        # fresh anonymous pages: a tensor could reuse memory an earlier test freed but the allocator kept resident
        block = mmap.mmap(-1, 64 * 2**20)  # 64 MiB
        block.write(b"\x01" * len(block))
        time.sleep(0.05)  # several sampling intervals while the pages are resident
        block.close()
    assert peak.peak_bytes >= 32 * 2**20


def test_saved_for_backward_counts_activations_once_and_not_the_weights():
    layer = nn.Linear(100, 50)
    x = torch.randn(8, 100, requires_grad=True)  # so the weight is needed for x's gradient too
    with saved_for_backward(layer) as saved:
        y = layer(x).relu()  # keeps x (for the weight's gradient) and the ReLU's output
    assert saved.bytes == x.nbytes + y.nbytes and saved.tensors == 2
    with saved_for_backward() as with_weights:
        layer(x).relu()
    assert with_weights.bytes > saved.bytes  # the weight, kept for x's gradient, counts when not excluded
    frozen = nn.Linear(100, 50).requires_grad_(False)
    with saved_for_backward(frozen) as nothing:
        frozen(x.detach())
    assert nothing.bytes == 0  # no gradient needed anywhere: autograd keeps nothing
