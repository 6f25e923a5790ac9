"""Timings side by side, printed against the kit's speed bars, never asserted: a busy laptop must not stop a lesson.

The bars themselves are checked in benchmarks/, as ratios measured side by side in one run.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def versus_bar(what: str, seconds: float, bar_seconds: float) -> str:
    """One line: the time, and its ratio to the bar (e.g. "16 images: 1.14 s = 0.57x the 2 s bar")."""
    if bar_seconds <= 0:
        raise ValueError(f"bar_seconds must be positive, got {bar_seconds}")
    ratio = seconds / bar_seconds
    verdict = "within the bar" if ratio <= 1 else "over the bar (a busy or slower machine? benchmarks/ measures it)"
    return f"{what}: {seconds:.2f} s = {ratio:.2f}x the {bar_seconds:g} s bar, {verdict}"


def interleaved_times(
    runs: Mapping[str, Callable[[], object]],
    repeats: int,
    setup: Mapping[str, Callable[[], object]] | None = None,
    warm_up: bool = True,
) -> dict[str, list[float]]:
    """Seconds of each run, timed `repeats` times side by side (round r of every run is paired).

    The runs take turns, in reversed order every other round, so a slow moment of the machine hits
    all of them alike; `setup[name]()` runs untimed before each timing of that run (e.g. switching
    adapters), and each run is done once untimed first when `warm_up`.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    setup = setup or {}
    if unknown := set(setup) - set(runs):
        raise ValueError(f"setup names runs that do not exist: {sorted(unknown)}; runs are {list(runs)}")
    names = list(runs)
    if warm_up:
        for name in names:
            setup.get(name, lambda: None)()
            runs[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            setup.get(name, lambda: None)()
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def interleaved_medians(
    runs: Mapping[str, Callable[[], object]],
    repeats: int,
    setup: Mapping[str, Callable[[], object]] | None = None,
    warm_up: bool = True,
) -> dict[str, float]:
    """Median seconds of each run, timed side by side by `interleaved_times`."""
    return {name: statistics.median(v) for name, v in interleaved_times(runs, repeats, setup, warm_up).items()}
