"""The judge audit: the shipped classifier agrees with the pixel rules on generated images (the bar: 95%)."""

import json
import math

import pytest
import torch

from lorakit.audit import AGREEMENT_BAR, audit_judge, audit_situations
from lorakit.data import ATTRIBUTES, BACKGROUND
from lorakit.plotting import show_audit
from lorakit.report import AUDITED
from lorakit.results import load_results


@pytest.fixture(scope="module")
def situations(pipe):
    return audit_situations(pipe, n_per_prompt=2, n_blend=8)


def test_audit_covers_base_loras_and_blends(situations, pipe):
    assert {"base", "orange LoRA", "striped LoRA", "weight t=0.5", "factor t=0.5"} <= set(situations)
    assert not pipe.get_list_adapters(), "the audit must leave the pipeline without adapters"


def test_judge_agrees_with_the_pixel_rules_on_generated_images(situations, classifier):
    audit = audit_judge(situations, classifier)
    for g in ATTRIBUTES:
        assert audit.agreement[g] >= AGREEMENT_BAR, (g, audit.agreement[g], audit.by_situation)
    assert audit.rows()[-1]["situation"] == "all"
    assert all(d.judge != d.pixels for d in audit.disagreements)
    text = audit.report()
    assert text.count("the 95% bar") == len(ATTRIBUTES) and text.count("on all images") == len(ATTRIBUTES)
    assert set(audit.standing().values()) <= {"meets", "inconclusive"} and "base" in text
    assert all(audit.agreement_all[g] <= audit.agreement[g] + 1e-12 for g in ATTRIBUTES)  # unreadable counts against
    images, titles = audit.disagreement_images(3)
    assert len(images) == len(titles) == min(3, len(audit.disagreements)) and images.dtype == torch.uint8


def test_a_wrong_judge_is_caught(situations, classifier):
    """If the judge read every image's colour wrongly, the audit must say so."""

    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = classifier

        def forward(self, x):
            out = self.inner(x)
            out["colour"] = out["colour"].roll(1, dims=-1)
            return out

    audit = audit_judge({"base": situations["base"]}, Shifted())
    assert audit.agreement["colour"] < 0.2 and audit.standing()["colour"] == "below"


def test_audit_refuses_empty_input(classifier):
    with pytest.raises(ValueError, match="at least one situation"):
        audit_judge({}, classifier)
    with pytest.raises(ValueError, match="no images"):
        audit_judge({"x": torch.zeros(0, 3, 32, 32, dtype=torch.uint8)}, classifier)


def test_images_with_no_shape_are_counted_apart_not_as_agreement(situations, classifier):
    blank = torch.tensor(BACKGROUND, dtype=torch.uint8)[None, :, None, None].expand(2, 3, 32, 32).contiguous()
    audit = audit_judge({"base": situations["base"], "blank": blank}, classifier)
    assert audit.counts["blank"] == 2 and audit.unreadable["blank"] == [0, 1]
    assert all(math.isnan(a) for a in audit.by_situation["blank"].values())
    assert not any(d.situation == "blank" for d in audit.disagreements)
    assert audit.agreement == audit_judge({"base": situations["base"]}, classifier).agreement
    images, titles = audit.unreadable_images(50)
    assert len(images) == len(titles) >= 2 and titles[-1].startswith("blank\nclf ")
    json.dumps(audit.summary(), allow_nan=False)  # NaN agreement is saved as null
    assert "blank" in audit.report()
    figures = show_audit(audit, 4)
    assert len(figures) == (2 if audit.disagreements else 1) and "no recognisable shape" in figures[-1]._suptitle.get_text()


@pytest.mark.parametrize("notebook", AUDITED)
def test_no_committed_judge_audit_is_below_the_bar_on_readable_images(notebook):
    """The audits the committed notebooks saved (full mode) are never wholly below the bar on an attribute's
    readable images (an interval containing it is reported as inconclusive), and say how far they are from it on
    all images (no recognisable shape counted as a disagreement)."""
    audit = load_results(notebook, quick=False)["judge_audit"]
    assert audit["bar"] == AGREEMENT_BAR
    assert all(audit["standing"][g] in ("meets", "inconclusive") for g in ATTRIBUTES), (notebook, audit["ci"])
    assert all(audit["standing"][g] == ("meets" if audit["ci"][g][0] >= AGREEMENT_BAR else "inconclusive")
               for g in ATTRIBUTES)
    assert set(audit["agreement_all"]) == set(ATTRIBUTES) and sum(audit["unreadable"].values()) < audit["images"]
