"""Scoring generated images against their prompts: one function, the same numbers as generating and judging by hand."""

import numpy as np
import pytest
import torch

from lorakit.data import make_dataset
from lorakit.evaluation import concat_scored, evaluate_prompts, score_prompts
from lorakit.metrics import attribute_accuracy, right_per_image
from lorakit.pipeline import generate

PROMPTS = ["a large red circle", "a small blue striped square"]


@pytest.fixture(scope="module")
def scored(pipe, classifier):
    return score_prompts(pipe, PROMPTS, n_per_prompt=3, seed=11, steps=4, classifier=classifier)


def test_score_prompts_is_generate_then_judge(scored, pipe, classifier):
    images = generate(pipe, PROMPTS, seed=11, n_per_prompt=3, num_inference_steps=4)
    each = [p for p in PROMPTS for _ in range(3)]
    assert torch.equal(scored.images, images) and scored.prompts == each
    assert scored.accuracy == attribute_accuracy(images, each, classifier)


def test_right_per_image_marks_groups_a_prompt_does_not_name(scored):
    assert set(scored.right) == {"style", "size", "colour", "shape", "all"}
    assert all(v.shape == (6,) for v in scored.right.values())
    assert np.isin(scored.right["all"], [0.0, 1.0]).all()
    assert (scored.right["all"] <= np.nan_to_num(scored.right["colour"], nan=1.0)).all()


def test_by_prompt_and_concat(scored, pipe, classifier):
    rows = scored.by_prompt()
    assert [r["prompt"] for r in rows] == PROMPTS
    first = attribute_accuracy(scored.images[:3], PROMPTS[0], classifier)
    assert rows[0] == {"prompt": PROMPTS[0], **first}
    plain = score_prompts(pipe, "a green triangle", n_per_prompt=2, seed=3, steps=4, classifier=classifier)
    both = concat_scored([scored, plain])
    assert len(both.images) == 8 and both.prompts[-1] == "a green triangle"
    assert np.isnan(both.right["size"][-2:]).all()  # "a green triangle" names no size
    assert both.accuracy["colour"] == pytest.approx(np.mean(np.r_[scored.right["colour"], plain.right["colour"]]))


def test_evaluate_prompts_rows_match_their_images(pipe, classifier):
    report = evaluate_prompts(pipe, PROMPTS, n_per_prompt=2, num_inference_steps=4, classifier=classifier)
    assert [r["prompt"] for r in report.rows] == PROMPTS and len(report.images) == 4
    assert report.overall == attribute_accuracy(report.images, report.prompts, classifier)
    assert right_per_image(report.images, report.prompts, classifier)["all"].mean() == report.overall["all"]


def test_judge_diversity_counts_valid_objects_only(classifier):
    from lorakit.data import few_shot_instance, no_object_images
    from lorakit.evaluation import judge_diversity, judge_vectors

    copies = few_shot_instance(16, seed=1).images  # one object, a pixel of jitter
    anywhere = make_dataset(16, seed=3).images  # every attribute
    noise = no_object_images(16, seed=0)
    one, n_one = judge_diversity(classifier, copies)
    many, n_many = judge_diversity(classifier, anywhere)
    assert n_one == n_many == 16 and one < 1.3 < 3 < many
    # fragments and noise do not count: adding them leaves the score of the valid objects as it was
    valid, vectors = judge_vectors(classifier, torch.cat([copies, noise]))
    assert valid[:16].all() and valid[16:].sum() <= 1 and vectors.shape == (32, 96)
    assert judge_diversity(classifier, torch.cat([copies, noise]))[0] < 1.5
    assert np.isnan(judge_diversity(classifier, noise[:0])[0])
