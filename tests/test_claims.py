import json

import pytest

from lorakit.claims import CLAIMS, claims_table, markdown_table


def test_table_gathers_saved_verdicts_and_lists_every_claim(tmp_path):
    (tmp_path / "04_mode_collapse.json").write_text(json.dumps({"verdicts": [
        {"claim": "C8", "verdict": "holds", "evidence": "Vendi 1.9", "section": "3.-Verdicts"}]}))
    (tmp_path / "02_lora_from_scratch.json").write_text(json.dumps({"verdicts": [
        {"claim": "C1", "claim_text": "...", "verdict": "holds, with a caveat", "evidence": "bitwise unchanged | yes"}]}))
    rows = claims_table(tmp_path)
    assert [r.claim for r in rows] == list(CLAIMS)  # one row each here, in order C1..C16
    c8 = next(r for r in rows if r.claim == "C8")
    assert c8.verdict == "holds" and c8.link == "[04](04_mode_collapse.ipynb#3.-Verdicts)"
    assert next(r for r in rows if r.claim == "C2").verdict == "not measured yet"
    md = markdown_table(rows)
    assert md.count("\n") == len(CLAIMS) + 1 and "bitwise unchanged / yes" in md  # pipes escaped


def test_unknown_claims_are_rejected(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"verdicts": [{"claim": "C99", "verdict": "?", "evidence": ""}]}))
    with pytest.raises(ValueError, match="unknown claim 'C99'"):
        claims_table(tmp_path)


def test_committed_results_judge_claims_with_numbers():
    rows = [r for r in claims_table() if r.notebook]
    assert rows and all(r.evidence for r in rows)
    assert {r.claim for r in rows} == set(CLAIMS)  # the course judges every claim C1-C16
