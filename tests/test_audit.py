"""The judge audit: the shipped classifier agrees with the pixel rules on generated images (the bar: 95%)."""

import pytest
import torch

from lorakit.audit import AGREEMENT_BAR, audit_judge, audit_situations
from lorakit.data import ATTRIBUTES


@pytest.fixture(scope="module")
def situations(pipe):
    return audit_situations(pipe, n_per_prompt=2, n_blend=8)


def test_audit_covers_base_loras_and_blends(situations, pipe):
    assert {"base", "orange LoRA", "striped LoRA", "weight t=0.5", "factor t=0.5"} <= set(situations)
    assert not pipe.get_list_adapters(), "the audit must leave the pipeline without adapters"


def test_judge_agrees_with_the_pixel_rules_on_generated_images(situations, classifier):
    audit = audit_judge(situations, classifier)
    print({g: round(a, 3) for g, a in audit.agreement.items()})
    for g in ATTRIBUTES:
        assert audit.agreement[g] >= AGREEMENT_BAR, (g, audit.agreement[g], audit.by_situation)
    assert audit.rows()[-1]["situation"] == "all"
    assert all(d.judge != d.pixels for d in audit.disagreements)
    text = audit.report()
    assert text.count("the 95% bar") == len(ATTRIBUTES) and "BELOW" not in text and "base" in text
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
    assert audit.agreement["colour"] < 0.2 and not audit.passes()["colour"]


def test_audit_refuses_empty_input(classifier):
    with pytest.raises(ValueError, match="at least one situation"):
        audit_judge({}, classifier)
    with pytest.raises(ValueError, match="no images"):
        audit_judge({"x": torch.zeros(0, 3, 32, 32, dtype=torch.uint8)}, classifier)
