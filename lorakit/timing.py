"""Timings printed against the kit's speed bars, never asserted: a busy laptop must not stop a lesson.

The bars themselves are checked in benchmarks/, as ratios measured side by side in one run.
"""

from __future__ import annotations


def versus_bar(what: str, seconds: float, bar_seconds: float) -> str:
    """One line: the time, and its ratio to the bar (e.g. "16 images: 1.14 s = 0.57x the 2 s bar")."""
    if bar_seconds <= 0:
        raise ValueError(f"bar_seconds must be positive, got {bar_seconds}")
    ratio = seconds / bar_seconds
    verdict = "within the bar" if ratio <= 1 else "over the bar (a busy or slower machine? benchmarks/ measures it)"
    return f"{what}: {seconds:.2f} s = {ratio:.2f}x the {bar_seconds:g} s bar, {verdict}"
