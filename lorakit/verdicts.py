"""Verdicts computed by stated rules: a claim's label follows from a statistic, its CI and a threshold.

Every verdict the notebooks save is built here, so a label cannot disagree with its numbers:

- `lorakit.metrics.mean_ci` gives the 95% interval of a mean over seeds (Student t; `median_ci` for a
  median, `bootstrap_ci` for a statistic over many samples);
- `verdict` applies one rule: the claim holds when the whole interval lies on the claim's side of
  the threshold, does not hold when the whole interval lies on the other side, and is
  "inconclusive" when the interval straddles it;
- `combine` judges a claim with several parts (or judged in several notebooks) from its parts'
  labels; `untestable` says plainly when the toy setting cannot test a claim;
- `recompute` derives a saved verdict's label again from its saved numbers (notebook 08 and the
  tests use it).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from lorakit.metrics import mean_ci

VERDICTS = ("holds", "partly holds", "does not hold", "inconclusive", "not testable here")
DIRECTIONS = ("above", "below")  # the claim holds when the statistic is above / below the threshold
FIELDS = ("claim", "verdict", "rule", "statistic", "ci", "threshold", "n_seeds", "evidence", "section")


def paired_difference_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean of a - b over paired seeds (or samples) and its Student-t interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same length, got {len(a)} and {len(b)}")
    return float((a - b).mean()), mean_ci(a - b, level)


def label(ci: Sequence[float], threshold: float, holds_when: str) -> str:
    """The rule: "holds" / "does not hold" when the interval lies wholly on one side, else "inconclusive"."""
    if holds_when not in DIRECTIONS:
        raise ValueError(f"holds_when must be one of {DIRECTIONS}, got {holds_when!r}")
    low, high = float(ci[0]), float(ci[1])
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"ci must be [low, high] with finite low <= high, got {ci!r}")
    above, below = low > threshold, high < threshold
    if not (above or below):
        return "inconclusive"
    return "holds" if above == (holds_when == "above") else "does not hold"


def _rule_text(statistic_name: str, threshold: float, holds_when: str) -> str:
    side = "above" if holds_when == "above" else "below"
    return (f"holds when the 95% CI of {statistic_name} lies wholly {side} {threshold:g}, does not hold when it "
            f"lies wholly on the other side; inconclusive when it contains {threshold:g}")


def verdict(claim: str, statistic_name: str, statistic: float, ci: Sequence[float], threshold: float,
            holds_when: str, n_seeds: int, evidence: str, section: str = "") -> dict:
    """One verdict record (the schema notebook 08 reads), its label computed by `label`."""
    if not (isinstance(n_seeds, int) and n_seeds >= 1):
        raise ValueError(f"n_seeds must be a positive whole number (how many seeds the CI is over), got {n_seeds!r}")
    if not math.isfinite(float(statistic)):
        raise ValueError(f"statistic must be a finite number, got {statistic!r}")
    ci = [float(ci[0]), float(ci[1])]
    return {"claim": claim, "verdict": label(ci, threshold, holds_when),
            "rule": _rule_text(statistic_name, threshold, holds_when), "statistic_name": statistic_name,
            "statistic": float(statistic), "ci": ci, "threshold": float(threshold), "holds_when": holds_when,
            "n_seeds": n_seeds, "evidence": evidence, "section": section}


def combine_labels(labels: Sequence[str], required: Sequence[bool] | None = None) -> str:
    """A claim from its parts: all hold -> holds; none holds, all refuted -> does not hold;
    some hold (or all testable ones, others untested) -> partly holds; none holds but some undecided -> inconclusive.

    A `required` part (the claim's core, e.g. "the eraser erases") that does not hold decides alone:
    the other parts cannot rescue it to "partly holds".
    """
    required = list(required) if required is not None else [False] * len(labels)
    core = [v for v, r in zip(labels, required) if r and v != "holds"]
    if core:
        return "does not hold" if "does not hold" in core else "inconclusive"
    judged = [v for v in labels if v != "not testable here"]
    if not judged:
        return "not testable here"
    if all(v == "holds" for v in judged):
        return "holds" if len(judged) == len(labels) else "partly holds"  # an untested part is not a held one
    if any(v in ("holds", "partly holds") for v in judged):
        return "partly holds"
    return "does not hold" if all(v == "does not hold" for v in judged) else "inconclusive"


def required(part: dict) -> dict:
    """Mark a part as the claim's core: if it does not hold, the claim does not hold whatever the other parts say."""
    return {**part, "required": True}


def combine(claim: str, parts: Sequence[dict], evidence: str = "", section: str = "") -> dict:
    """A verdict over several part-verdicts (each a `verdict` record, its `claim` naming the part).

    Parts that are "not testable here" are listed but neither counted nor decide the label.
    """
    if not parts:
        raise ValueError("combine needs at least one part")
    testable = [p for p in parts if p["verdict"] != "not testable here"]
    held = sum(p["verdict"] == "holds" for p in testable)
    return {"claim": claim, "verdict": combine_labels([p["verdict"] for p in parts], [bool(p.get("required")) for p in parts]),
            "rule": (f"holds when all {len(testable)} testable parts hold, does not hold when every one does not; "
                     "partly holds when some part holds; inconclusive when none holds and some part is inconclusive"
                     + ("; a required part that does not hold decides alone" if any(p.get("required") for p in parts)
                        else "")),
            "statistic_name": "testable parts that hold", "statistic": float(held), "ci": [float(held), float(held)],
            "threshold": float(len(testable)), "holds_when": "parts",
            "n_seeds": min((p.get("n_seeds", 0) for p in testable), default=0),
            "evidence": evidence or "; ".join(f"{p['claim']}: {p['verdict']}" for p in parts),
            "section": section, "parts": list(parts)}


def untestable(claim: str, reason: str, section: str = "") -> dict:
    """A claim the toy setting cannot test, and why (no statistic, no interval)."""
    return {"claim": claim, "verdict": "not testable here", "rule": "not testable here: " + reason,
            "statistic_name": "", "statistic": None, "ci": None, "threshold": None, "holds_when": "",
            "n_seeds": 0, "evidence": reason, "section": section}


def recompute(record: dict) -> str:
    """The label a saved verdict's own numbers give (parts first, then the rule)."""
    if record.get("parts"):
        return combine_labels([recompute(p) for p in record["parts"]], [bool(p.get("required")) for p in record["parts"]])
    if record.get("statistic") is None:
        return "not testable here"
    return label(record["ci"], record["threshold"], record["holds_when"])


def schema_problems(record: dict) -> list[str]:
    """What a saved verdict lacks or gets wrong (empty when it follows the schema)."""
    problems = [f"missing {f!r}" for f in FIELDS if f not in record]
    if record.get("verdict") not in VERDICTS:
        problems.append(f"verdict {record.get('verdict')!r} is not one of {VERDICTS}")
    if not problems and record["verdict"] != "not testable here":
        if not isinstance(record["statistic"], (int, float)) or not isinstance(record["threshold"], (int, float)):
            problems.append("statistic and threshold must be numbers")
        elif not (isinstance(record["ci"], list) and len(record["ci"]) == 2):
            problems.append("ci must be [low, high]")
        elif recompute(record) != record["verdict"]:
            problems.append(f"label {record['verdict']!r} disagrees with its numbers ({recompute(record)!r})")
    for part in record.get("parts", []):
        problems += [f"part {part.get('claim')}: {p}" for p in schema_problems(part)]
    return problems
