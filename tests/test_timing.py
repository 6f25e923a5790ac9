"""Timings: printed against a bar, and measured side by side."""

import pytest

from lorakit.timing import interleaved_medians, interleaved_times, versus_bar


def test_versus_bar_reports_the_ratio():
    assert versus_bar("x", 1.0, 2.0) == "x: 1.00 s = 0.50x the 2 s bar, within the bar"
    assert "over the bar" in versus_bar("x", 3.0, 2.0)
    with pytest.raises(ValueError):
        versus_bar("x", 1.0, 0)


def test_interleaved_medians_take_turns_in_alternating_order_with_untimed_setup():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    setup = {"b": lambda: calls.append("setup b")}
    medians = interleaved_medians(runs, repeats=3, setup=setup)
    assert set(medians) == {"a", "b"} and all(m >= 0 for m in medians.values())
    assert calls == ["a", "setup b", "b",  # warm-up
                     "a", "setup b", "b", "setup b", "b", "a", "a", "setup b", "b"]


def test_interleaved_medians_refuse_bad_input():
    with pytest.raises(ValueError, match="repeats"):
        interleaved_medians({"a": lambda: None}, repeats=0)
    with pytest.raises(ValueError, match="setup names runs that do not exist"):
        interleaved_medians({"a": lambda: None}, repeats=1, setup={"b": lambda: None})


def test_interleaved_times_pair_the_rounds():
    times = interleaved_times({"a": lambda: None, "b": lambda: None}, repeats=4, warm_up=False)
    assert [len(v) for v in times.values()] == [4, 4]
