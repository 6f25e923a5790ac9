"""Verdicts follow from their numbers: one rule, tested at its edges; every saved verdict obeys it."""

import json

import numpy as np
import pytest

from lorakit.metrics import bootstrap_ci, mean_ci, median_ci, proportion_ci
from lorakit.results import RESULTS_DIR
from lorakit.verdicts import (
    VERDICTS, combine, combine_labels, label, recompute, required, schema_problems, untestable, verdict,
)


@pytest.mark.parametrize("ci, expected", [
    ((0.6, 0.8), "holds"), ((0.1, 0.3), "does not hold"), ((0.4, 0.6), "inconclusive"), ((0.5, 0.7), "inconclusive"),
])
def test_label_above(ci, expected):
    assert label(ci, 0.5, "above") == expected


def test_label_below_mirrors_above():
    assert label((0.1, 0.3), 0.5, "below") == "holds"
    assert label((0.6, 0.8), 0.5, "below") == "does not hold"
    assert label((0.4, 0.6), 0.5, "below") == "inconclusive"


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="holds_when"):
        label((0, 1), 0.5, "more")
    with pytest.raises(ValueError, match="low <= high"):
        label((1, 0), 0.5, "above")
    with pytest.raises(ValueError, match="n_seeds"):
        verdict("C1", "x", 1.0, (1, 1), 0.5, "above", 0, "")
    with pytest.raises(ValueError, match="finite"):
        mean_ci([1.0, float("nan")])


def test_mean_interval_is_students_t():
    lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (lo + hi) / 2 == pytest.approx(3.0)
    assert hi - 3.0 == pytest.approx(2.7764451 * np.std([1, 2, 3, 4, 5], ddof=1) / 5 ** 0.5)  # t(4, 0.975)
    assert mean_ci([0.3, 0.3, 0.3]) == (0.3, 0.3) and mean_ci([0.3]) == (0.3, 0.3)


def _coverage(interval, n: int, trials: int = 400) -> float:
    rng = np.random.default_rng(1)
    return float(np.mean([lo <= 0 <= hi for lo, hi in (interval(rng.normal(0, 1, n)) for _ in range(trials))]))


def test_five_seeds_get_95_percent_coverage_where_a_bootstrap_would_get_85():
    assert _coverage(mean_ci, 5) > 0.92
    percentile = lambda x: tuple(np.percentile(x[np.random.default_rng(0).integers(0, len(x), (2000, len(x)))].mean(1),
                                               [2.5, 97.5]))
    assert _coverage(percentile, 5) < 0.9  # why the course does not bootstrap over seeds


def test_median_interval_is_the_order_statistics_with_binomial_coverage():
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0, 7.0, 6.0]) == (1.0, 7.0)  # 7 values: [min, max] covers 98.4%
    assert median_ci(list(range(20))) == (5.0, 14.0)  # P(Bin(20, 1/2) <= 5) = 2.07% <= 2.5%
    assert median_ci([2.0, 1.0, 3.0]) == (1.0, 3.0)  # too few for 95%: the widest interval there is


def test_proportion_interval_is_wilsons_and_honest_at_the_edges():
    lo, hi = proportion_ci([1.0] * 100)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.963, abs=1e-3)  # 100 of 100 is not certainty
    lo, hi = proportion_ci([1.0] * 90 + [0.0] * 10)
    assert (lo, hi) == pytest.approx((0.8256, 0.9448), abs=1e-4)  # Wilson's 90 of 100
    with pytest.raises(ValueError, match="0 or 1"):
        proportion_ci([0.5, 1.0])


def test_bootstrap_interval_over_many_samples_covers_the_mean_and_shrinks():
    rng = np.random.default_rng(0)
    few, many = rng.normal(1, 1, 20), rng.normal(1, 1, 200)
    lo, hi = bootstrap_ci(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo


def test_combine_labels():
    assert combine_labels(["holds", "holds"]) == "holds"
    assert combine_labels(["holds", "does not hold"]) == "partly holds"
    assert combine_labels(["does not hold", "does not hold"]) == "does not hold"
    assert combine_labels(["does not hold", "inconclusive"]) == "inconclusive"
    assert combine_labels(["holds", "not testable here"]) == "partly holds"
    assert combine_labels(["does not hold", "not testable here"]) == "does not hold"
    assert combine_labels(["not testable here"]) == "not testable here"


def test_a_required_part_decides_alone_when_it_fails():
    erases = verdict("C16: erasure", "erasure rate", 0.1, (0.0, 0.2), 0.8, "above", 1, "erases little")
    harmless = verdict("C16: collateral", "drop", 0.0, (0.0, 0.0), 0.1, "below", 1, "breaks nothing")
    assert combine("C16", [erases, harmless])["verdict"] == "partly holds"
    whole = combine("C16", [required(erases), harmless])
    assert whole["verdict"] == "does not hold" and recompute(whole) == "does not hold" and not schema_problems(whole)
    whole["parts"][0]["ci"] = [0.85, 0.95]
    assert recompute(whole) == "holds"


def test_changing_a_statistic_changes_the_label():
    v = verdict("C6", "speed-up", 1.5, (1.3, 1.7), 1.1, "above", 5, "LoRA 1.5x faster")
    assert v["verdict"] == "holds" and schema_problems(v) == []
    v["ci"] = [0.8, 1.0]
    assert recompute(v) == "does not hold"
    assert schema_problems(v), "a label that disagrees with its numbers must be caught"
    whole = combine("C6", [verdict("C6 speed", "s", 1.5, (1.3, 1.7), 1.1, "above", 5, ""),
                           verdict("C6 storage", "s", 50.0, (50, 50), 10, "above", 1, "")])
    assert whole["verdict"] == "holds"
    whole["parts"][0]["ci"] = [0.5, 0.9]
    assert recompute(whole) == "partly holds"


def test_untestable_has_no_numbers():
    v = untestable("C10", "no adversarial recipe for a 5-image LoRA")
    assert v["verdict"] == "not testable here" and v["statistic"] is None and schema_problems(v) == []


def _saved_verdicts():
    for path in sorted(RESULTS_DIR.glob("*.json")):
        for v in json.loads(path.read_text()).get("verdicts", []):
            yield path.stem, v


def test_every_saved_verdict_follows_the_schema_and_its_numbers():
    saved = list(_saved_verdicts())
    assert saved, "no saved verdicts found"
    for notebook, v in saved:
        assert v["verdict"] in VERDICTS, (notebook, v["claim"], v["verdict"])
        assert schema_problems(v) == [], (notebook, v["claim"], schema_problems(v))
        if v["verdict"] != "not testable here":
            assert v["n_seeds"] >= 1 and v["rule"] and v["evidence"]
