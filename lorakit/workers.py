"""Independent runs spread over the CPU's cores, in worker processes forked from the notebook's.

A training step of the tiny model is too small to keep two cores busy: on the course's 2-core CPU a
DreamBooth step runs only about 1.25x faster with two threads than with one, while two one-thread
processes side by side finish four LoRA runs in 0.69 of the time (`benchmarks/workers.py`). So where
a notebook trains several independent runs (seeds, learning rates, adapter kinds, remedies),
`parallel_map` gives each core its own run.

Workers are forked from the notebook's process, so a job (even a closure) and the notebook's
variables it reads (the encoded data, the judge) reach them without being copied; its result comes
back pickled. Each worker has one thread (a forked child that opens a multi-threaded OpenMP region
can hang) and draws no progress bars. Each job must seed everything it draws from its own
arguments, so that its result does not depend on which process ran it. On a GPU, on macOS and on
Windows (no safe `fork`), and with `LORAKIT_WORKERS=1`, the jobs run one after another in the
notebook's process: the same results (up to float rounding between one and two threads), only
slower on a CPU.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

import torch
from tqdm.auto import tqdm

from lorakit.devices import device

T = TypeVar("T")
R = TypeVar("R")


MAX_WORKERS = 4  # each worker holds its own pipelines and optimizer: a cap on memory whatever the core count
_job: Callable | None = None  # the running parallel_map's function, inherited by its forked workers


def _cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a container's CPU quota (cgroup v2 cpu.max)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _forking_helps() -> bool:
    """Whether jobs may run in forked workers here: a Linux CPU (fork is unsafe on macOS, absent on Windows, and
    CUDA cannot be used in a forked child)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() and device().type == "cpu"


def default_workers() -> int:
    """How many worker processes `parallel_map` uses: LORAKIT_WORKERS if set, else one per core (at most MAX_WORKERS)
    on a Linux CPU, else 1."""
    value = os.environ.get("LORAKIT_WORKERS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"LORAKIT_WORKERS={value!r} is not a whole number of at least 1: use e.g. "
                             "LORAKIT_WORKERS=1 to run jobs one after another, or unset it for one per core")
        return int(value)
    if not _forking_helps():
        return 1
    return min(_cores(), MAX_WORKERS)  # more processes than cores would share them: 3 on 2 cores train 25% less than 2


def _quiet_progress_bars() -> None:
    """Inside a worker: every tqdm bar off (a forked worker cannot draw in the notebook)."""
    from tqdm import notebook, std

    for cls in (std.tqdm, notebook.tqdm_notebook):
        if not getattr(cls.__init__, "_quiet", False):
            def quiet(self, *args, _init=cls.__init__, **kwargs) -> None:
                kwargs["disable"] = True
                _init(self, *args, **kwargs)
            quiet._quiet = True
            cls.__init__ = quiet


def _run_in_worker(item: object) -> bytes:
    """Inside a worker: the inherited job on one item, one thread, no progress bars; its result pickled by value
    (not through shared memory, which needs a file descriptor per tensor)."""
    torch.set_num_threads(1)
    _quiet_progress_bars()
    return pickle.dumps(_job(item))


def _counted(result: R, bar: tqdm) -> R:
    """One job done: advance the progress bar."""
    bar.update()
    return result


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, desc: str | None = None) -> list[R]:
    """[fn(item) for item in items], run in `workers` forked processes (default: `default_workers()`).

    Off a Linux CPU the jobs run here, one after another, whatever `workers` says. In a worker,
    progress bars are off and printed text may not reach the notebook, so a job returns what it
    measured; items and results must pickle. A job's exception is raised here, with its traceback.
    """
    global _job
    items = list(items)
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of at least 1, got {workers!r}")
    workers = min(workers, len(items))
    bar = tqdm(total=len(items), desc=desc, disable=desc is None)
    if workers <= 1 or not _forking_helps():
        try:
            return [_counted(fn(item), bar) for item in items]
        finally:
            bar.close()
    _job = fn
    with warnings.catch_warnings():  # Python 3.12+ warns that forking a threaded process may deadlock; the
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)  # workers run only torch
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_run_in_worker, item): i for i, item in enumerate(items)}
            results: list = [None] * len(items)
            try:
                for future in as_completed(futures):
                    results[futures[future]] = pickle.loads(future.result())  # a job's exception is raised here
                    bar.update()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the jobs not started yet are dropped, not run
                raise
            finally:
                bar.close()
                _job = None
    return results
