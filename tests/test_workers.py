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


def test_closures_run_in_workers_without_pickling():
    offset = 10
    assert parallel_map(lambda x: x + offset, [1, 2, 3], workers=2) == [11, 12, 13]


def test_off_linux_or_on_a_gpu_jobs_run_here_whatever_the_count(monkeypatch):
    monkeypatch.setattr(workers.sys, "platform", "darwin")
    assert {pid for _, pid, _ in parallel_map(_square_with_pid, [1, 2, 3], workers=2)} == {os.getpid()}
    monkeypatch.setattr(workers.sys, "platform", "linux")
    monkeypatch.setattr(workers, "device", lambda: torch.device("cuda"))
    assert {pid for _, pid, _ in parallel_map(_square_with_pid, [1, 2, 3], workers=2)} == {os.getpid()}


def test_workers_have_one_thread_and_results_come_back_by_value():
    results = parallel_map(_square_with_pid, [1, 2], workers=2)
    assert [threads for *_, threads in results] == [1, 1]
    big = parallel_map(lambda n: {f"w{i}": torch.full((64, 64), float(i)) for i in range(n)}, [300], workers=2)[0]
    assert len(big) == 300 and float(big["w299"][0, 0]) == 299.0  # hundreds of tensors, no shared-memory descriptors


def test_cores_follow_a_container_quota(monkeypatch, tmp_path):
    real_open = open

    def fake_open(path, *args, **kwargs):
        if str(path) == "/sys/fs/cgroup/cpu.max":
            return real_open(tmp_path / "cpu.max", *args, **kwargs)
        return real_open(path, *args, **kwargs)

    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda _: set(range(64)))
    assert workers._cores() == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert workers._cores() == 64
    monkeypatch.delenv("LORAKIT_WORKERS", raising=False)
    monkeypatch.setattr(workers, "device", lambda: torch.device("cpu"))
    monkeypatch.setattr(workers.sys, "platform", "linux")
    assert default_workers() == workers.MAX_WORKERS
