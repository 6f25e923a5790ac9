"""parallel_map: the same results, in order, whether jobs run in forked workers or one after another."""

from __future__ import annotations

import os

import pytest
import torch

from lorakit import workers
from lorakit.workers import default_workers, parallel_map


def _square_with_pid(x: int) -> tuple[int, int, int]:
    """A job: its result, the process that ran it and its thread count."""
    return x * x, os.getpid(), torch.get_num_threads()


def _noisy_sum(seed: int) -> float:
    """A job that draws from its own seed: its result must not depend on the process."""
    return float(torch.randn(1000, generator=torch.Generator().manual_seed(seed)).sum())


def _fails(x: int) -> int:
    """A job that raises on one item."""
    if x == 2:
        raise KeyError("job 2 went wrong")
    return x


def test_forked_results_equal_sequential_and_keep_order():
    forked = parallel_map(_noisy_sum, range(6), workers=2)
    assert forked == [_noisy_sum(s) for s in range(6)]
    squares = parallel_map(_square_with_pid, [3, 1, 2], workers=2)
    assert [r[0] for r in squares] == [9, 1, 4]
    assert all(pid != os.getpid() for _, pid, _ in squares)  # really in workers
    assert all(threads >= 1 for *_, threads in squares)


def test_one_worker_runs_in_this_process():
    assert {pid for _, pid, _ in parallel_map(_square_with_pid, [1, 2], workers=1)} == {os.getpid()}
    assert parallel_map(_square_with_pid, [], workers=2) == []


def test_a_jobs_error_is_raised_here():
    with pytest.raises(KeyError, match="job 2 went wrong"):
        parallel_map(_fails, range(4), workers=2)
    with pytest.raises(KeyError, match="job 2 went wrong"):
        parallel_map(_fails, range(4), workers=1)


def test_bad_worker_counts_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="at least 1"):
        parallel_map(_fails, [1], workers=0)
    monkeypatch.setenv("LORAKIT_WORKERS", "two")
    with pytest.raises(ValueError, match="LORAKIT_WORKERS='two'.*LORAKIT_WORKERS=1"):
        default_workers()


def test_default_workers(monkeypatch):
    monkeypatch.setenv("LORAKIT_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("LORAKIT_WORKERS")
    monkeypatch.setattr(workers.sys, "platform", "darwin")  # no safe fork: one after another
    assert default_workers() == 1
    monkeypatch.setattr(workers.sys, "platform", "linux")
    monkeypatch.setattr(workers, "device", lambda: torch.device("cuda"))
    assert default_workers() == 1
    monkeypatch.setattr(workers, "device", lambda: torch.device("cpu"))
    monkeypatch.setattr(workers, "_cores", lambda: 2)
    assert default_workers() == 2


def _bar_is_off(_: int) -> bool:
    """A job that asks for a progress bar: whether it came out disabled."""
    from tqdm.auto import tqdm

    return tqdm(range(3), disable=False).disable


def test_workers_draw_no_progress_bars():
    assert parallel_map(_bar_is_off, [0, 1], workers=2) == [True, True]
    assert parallel_map(_bar_is_off, [0], workers=1) == [False]  # in this process, bars stay as asked
