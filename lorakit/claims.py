"""The popular claims about LoRA the course tests (C1-C16), and the verdict table built from the notebooks' results.

Each notebook saves its verdicts (`lorakit.results.save_results(..., {"verdicts": [...]})`), built by
`lorakit.verdicts` from measured numbers. The table is gathered from those files, never typed by
hand: every label is recomputed from its saved numbers, and a claim judged in several notebooks
becomes one reconciled row (`lorakit.verdicts.combine_labels` over its judgements).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.results import RESULTS_DIR, notebook_number
from lorakit.verdicts import VERDICTS, combine_labels, recompute

CLAIMS = {
    "C1": "LoRA trains few extra low-rank parameters and leaves the base weights untouched, so the base keeps its capabilities",
    "C2": "LoRA reduces the rank of the weight matrices, and so the cost of inference",
    "C3": "LoRA works by adding a low-rank regularisation term to the loss",
    "C4": "A low-rank matrix has a limited number of non-zero entries",
    "C5": "LoRA improves training stability by reducing vanishing gradients",
    "C6": "Compared with full fine-tuning, LoRA trains faster, needs far less storage and overfits less",
    "C7": "Ranks can be reduced with QR decomposition or SVD",
    "C8": "Training a LoRA can lead to mode collapse (outputs lose diversity)",
    "C9": "Mode collapse is mitigated by regularisation, augmentation, early stopping, tuning rank and learning rate",
    "C10": "Adversarial training and counterfactual generation prevent mode collapse",
    "C11": "Interpolating LoRAs tends to cause mode collapse and a lack of diversity",
    "C12": "LoRA interpolation is computationally expensive and hard to scale",
    "C13": "LoRA interpolation can carry biases of the training data into the outputs",
    "C14": "The adaptation is hard to interpret",
    "C15": "There are three prominent implementations (original SD, Diffusion-FFJ, Hugging Face); a lora_matrix= argument",
    "C16": "LoRA can control what content a model generates (e.g. suppress a category)",
}


@dataclass(frozen=True)
class Judgement:
    """One verdict one notebook saved on one claim."""

    notebook: str
    record: dict

    @property
    def label(self) -> str:
        """The label the saved numbers give (recomputed, not read)."""
        return recompute(self.record)

    @property
    def number(self) -> str:
        """The notebook's number as its title writes it, e.g. "04" or "04b"."""
        return notebook_number(self.notebook)

    @property
    def link(self) -> str:
        """A Markdown link to the evidence (relative to notebooks/)."""
        section = self.record.get("section", "")
        return f"[{self.number}]({self.notebook}.ipynb{'#' + section if section else ''})"

    def numbers(self) -> str:
        """The deciding statistic, its interval and threshold in a few words."""
        return _numbers(self.record)


def _numbers(record: dict) -> str:
    if record.get("parts"):
        return "; ".join(f"{p['claim']}: {recompute(p)} ({_numbers(p)})" for p in record["parts"])
    if record.get("statistic") is None:
        return "no statistic"
    lo, hi = record["ci"]
    side = ">" if record["holds_when"] == "above" else "<"
    return (f"{record.get('statistic_name', 'statistic')} {record['statistic']:.3g} "
            f"[{lo:.3g}, {hi:.3g}], holds if {side} {record['threshold']:.3g}, n = {record['n_seeds']}")


@dataclass
class ClaimRow:
    """One claim, reconciled over every notebook that judged it."""

    claim: str
    statement: str
    judgements: list[Judgement] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The claim's label: one judgement's recomputed label, or several combined by the parts rule."""
        if not self.judgements:
            return "not measured yet"
        return combine_labels([j.label for j in self.judgements])

    @property
    def disagreements(self) -> list[str]:
        """Saved labels that their own numbers no longer give (should be empty)."""
        return [f"{j.notebook}: saved {j.record['verdict']!r}, numbers give {j.label!r}"
                for j in self.judgements if j.record["verdict"] != j.label]

    @property
    def evidence(self) -> str:
        return " · ".join((f"{j.number}: " if len(self.judgements) > 1 else "") + j.record["evidence"]
                          for j in self.judgements)


def _order(claim: str) -> int:
    return int(claim[1:])


def claims_table(results_dir: str | Path = RESULTS_DIR) -> list[ClaimRow]:
    """One row per claim C1-C16 with every judgement the notebooks saved (none: "not measured yet")."""
    rows = {c: ClaimRow(c, text) for c, text in CLAIMS.items()}
    for path in sorted(Path(results_dir).glob("*.json")):
        for record in json.loads(path.read_text()).get("verdicts", []):
            if record.get("claim") not in CLAIMS:
                raise ValueError(f"{path.name} judges an unknown claim {record.get('claim')!r}; known: {list(CLAIMS)}")
            if record.get("verdict") not in VERDICTS:
                raise ValueError(f"{path.name}: {record['claim']}'s verdict {record.get('verdict')!r} is not one of "
                                 f"{VERDICTS}; build it with lorakit.verdicts")
            rows[record["claim"]].judgements.append(Judgement(path.stem, record))
    return sorted(rows.values(), key=lambda r: _order(r.claim))


def markdown_table(rows: list[ClaimRow]) -> str:
    """The table as Markdown: one row per claim, its reconciled verdict, the numbers and links to the evidence."""
    lines = ["| claim | what it says | verdict | statistic [95% CI] and rule | evidence |", "|---|---|---|---|---|"]
    for r in rows:
        numbers = " · ".join(j.numbers() for j in r.judgements).replace("|", "/") or "—"
        links = ", ".join(j.link for j in r.judgements) or "no notebook yet"
        lines.append(f"| {r.claim} | {r.statement} | **{r.verdict}** | {numbers} | {links} |")
    return "\n".join(lines)


def verdict_counts(rows: list[ClaimRow]) -> dict[str, list[str]]:
    """Claims by verdict label, in the order of `lorakit.verdicts.VERDICTS` (claims, not rows)."""
    counts = {v: [r.claim for r in rows if r.verdict == v] for v in (*VERDICTS, "not measured yet")}
    return {v: cs for v, cs in counts.items() if cs}


def takeaways(rows: list[ClaimRow]) -> str:
    """What the course found, as Markdown bullets written from the saved verdicts and their evidence."""
    lines = []
    for label, claims in verdict_counts(rows).items():
        lines.append(f"- **{label}** ({len(claims)} of {len(rows)} claims):")
        for r in rows:
            if r.claim in claims:
                lines.append(f"  - {r.claim}, *{r.statement}*: {r.evidence}")
    return "\n".join(lines)
