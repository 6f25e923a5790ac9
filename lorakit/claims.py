"""The popular claims about LoRA the course tests (C1-C16), and the verdict table built from the notebooks' results.

Each notebook saves its verdicts (`lorakit.results.save_results(..., {"verdicts": [...]})`); the
table is gathered from those files, never typed by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lorakit.results import RESULTS_DIR

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


@dataclass
class Verdict:
    """One row of the claims table."""

    claim: str
    statement: str
    verdict: str
    evidence: str
    notebook: str  # where the evidence is ("" when not measured yet)
    section: str = ""  # anchor of the section inside the notebook

    @property
    def link(self) -> str:
        """A Markdown link to the evidence (relative to notebooks/)."""
        if not self.notebook:
            return "no notebook yet"
        anchor = f"#{self.section}" if self.section else ""
        return f"[{self.notebook[:2]}]({self.notebook}.ipynb{anchor})"


def _order(claim: str) -> int:
    return int(claim[1:])


def claims_table(results_dir: str | Path = RESULTS_DIR) -> list[Verdict]:
    """Every claim C1-C16 with the verdicts the notebooks saved; a claim several notebooks judged gets a row each.

    Claims no notebook has judged yet appear as "not measured yet".
    """
    rows: list[Verdict] = []
    for path in sorted(Path(results_dir).glob("*.json")):
        saved = json.loads(path.read_text())
        for v in saved.get("verdicts", []):
            if v["claim"] not in CLAIMS:
                raise ValueError(f"{path.name} judges an unknown claim {v['claim']!r}; known: {list(CLAIMS)}")
            rows.append(Verdict(v["claim"], CLAIMS[v["claim"]], v["verdict"], v["evidence"], path.stem,
                                v.get("section", "")))
    judged = {r.claim for r in rows}
    rows += [Verdict(c, text, "not measured yet", "", "") for c, text in CLAIMS.items() if c not in judged]
    return sorted(rows, key=lambda r: (_order(r.claim), r.notebook))


def markdown_table(rows: list[Verdict]) -> str:
    """The table as Markdown, with links to the evidence."""
    lines = ["| claim | what it says | verdict | deciding numbers | evidence |", "|---|---|---|---|---|"]
    for r in rows:
        evidence = r.evidence.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.claim} | {r.statement} | **{r.verdict}** | {evidence} | {r.link} |")
    return "\n".join(lines)
