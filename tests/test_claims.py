import json

import pytest

from lorakit.claims import CLAIMS, claims_table, markdown_table, takeaways, verdict_counts
from lorakit.verdicts import combine, untestable, verdict


def _write(folder, name, records):
    (folder / f"{name}.json").write_text(json.dumps({"verdicts": records}))


def test_one_row_per_claim_with_recomputed_and_reconciled_labels(tmp_path):
    _write(tmp_path, "02_lora_from_scratch", [
        verdict("C1", "drop in accuracy", 0.01, (-0.01, 0.03), 0.05, "below", 5, "kept | 99%", "7.-Verdicts")])
    _write(tmp_path, "03_lora_vs_full_finetuning", [
        verdict("C1", "drop in accuracy", 0.09, (0.07, 0.11), 0.05, "below", 5, "forgot 9 points"),
        combine("C6", [verdict("C6: storage", "size ratio", 60, (60, 60), 10, "above", 1, "60x"),
                       untestable("C6: overfitting", "no held-out loss")])])
    rows = claims_table(tmp_path)
    assert [r.claim for r in rows] == list(CLAIMS)  # one row per claim, C1..C16
    c1 = rows[0]
    assert [j.label for j in c1.judgements] == ["holds", "does not hold"] and c1.verdict == "partly holds"
    assert rows[5].verdict == "partly holds"  # C6: its one testable part holds, the other is untested
    assert rows[1].verdict == "not measured yet"
    md = markdown_table(rows)
    assert md.count("\n") == len(CLAIMS) + 1 and "kept / 99%" not in md  # evidence is not in the table's cells
    assert "[02](02_lora_from_scratch.ipynb#7.-Verdicts)" in md
    counts = verdict_counts(rows)
    assert counts["partly holds"] == ["C1", "C6"] and sum(map(len, counts.values())) == len(CLAIMS)
    assert "**partly holds** (2 of 16 claims)" in takeaways(rows)


def test_a_saved_label_that_its_numbers_do_not_give_is_reported(tmp_path):
    record = verdict("C2", "cost ratio", 0.99, (0.97, 1.01), 0.9, "below", 3, "merged 0.99x")
    record["verdict"] = "holds"  # typed by hand over the numbers
    _write(tmp_path, "02_lora_from_scratch", [record])
    row = claims_table(tmp_path)[1]
    assert row.verdict == "does not hold" and row.disagreements


def test_unknown_claims_and_labels_are_rejected(tmp_path):
    _write(tmp_path, "x", [{"claim": "C99", "verdict": "holds", "evidence": ""}])
    with pytest.raises(ValueError, match="unknown claim 'C99'"):
        claims_table(tmp_path)
    _write(tmp_path, "x", [{"claim": "C2", "verdict": "partly: yes", "evidence": ""}])
    with pytest.raises(ValueError, match="not one of"):
        claims_table(tmp_path)


def test_committed_results_judge_every_claim_with_numbers_that_give_their_labels():
    rows = claims_table()
    assert all(r.judgements for r in rows), [r.claim for r in rows if not r.judgements]
    assert not [p for r in rows for p in r.disagreements]
