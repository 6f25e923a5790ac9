import pytest
import torch

from lorakit.collapse import METRICS, CollapseProbe
from lorakit.data import few_shot_instance
from lorakit.diffusion import TrainConfig
from lorakit.dreambooth import Checkpoints, class_images, early_stopping_step, train_dreambooth
from lorakit.pipeline import load_pipeline
from lorakit.widgets import CheckpointExplorer


@pytest.fixture(scope="module")
def probe(classifier):
    return CollapseProbe(few_shot_instance(5), n=4, sample_steps=4, classifier=classifier)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pipe = load_pipeline(device="cpu")
    result = train_dreambooth(pipe, few_shot_instance(5), TrainConfig(steps=4, batch_size=4, seed=0),
                              checkpoints=Checkpoints(tmp_path_factory.mktemp("ck"), every=2))
    return pipe, result


def test_probe_scores_every_metric_in_range(pipe, probe):
    scores = probe.measure(pipe)
    assert set(scores) == set(METRICS)
    for name in ("fidelity", "valid", "coverage", "editability", "class_accuracy", "class_as_instance"):
        assert 0.0 <= scores[name] <= 1.0
    assert 1.0 <= scores["diversity"] <= probe.n * scores["valid"] and 1.0 <= scores["pixel_vendi"] <= probe.n
    assert scores["nn_distance"] > 0
    assert probe.measure(pipe) == scores  # fixed seeds: the same numbers every time
    # the base model has never seen "sks": it does not draw the instance for it, and keeps its class words
    assert scores["fidelity"] <= 0.5 and scores["class_accuracy"] >= 0.75


def test_train_dreambooth_checkpoints_from_step_zero(run):
    pipe, result = run
    assert list(result.checkpoints) == [0, 2, 4] and len(result.losses) == 4 and result.seconds > 0


@pytest.mark.slow
def test_early_stopping_prefers_the_most_diverse_faithful_checkpoint(run, probe):
    pipe, result = run
    step, scores = early_stopping_step(pipe, result.checkpoints, probe, min_fidelity=0.0)
    assert set(scores) == {0, 2, 4}
    assert step == max(scores, key=lambda s: scores[s]["diversity"])
    step, _ = early_stopping_step(pipe, result.checkpoints, probe, min_fidelity=1.1)  # nobody reaches it
    assert step == max(scores, key=lambda s: scores[s]["fidelity"])
    with pytest.raises(ValueError, match="no checkpoints"):
        early_stopping_step(pipe, {}, probe)


def test_class_images_are_the_base_models_class_samples(pipe, classifier):
    data = class_images(pipe, "a triangle", 3, classifier)
    assert data.images.shape == (3, 3, 32, 32) and data.captions == ["a triangle"] * 3
    assert all(a.shape == "triangle" for a in data.attributes)





@pytest.mark.slow
def test_checkpoint_explorer_redraws_for_slider_values(run, probe):
    pipe, result = run
    explorer = CheckpointExplorer(pipe, result.checkpoints, probe, n=2)
    calls = []
    real = explorer.images
    explorer.images = lambda step, scale: calls.append((step, scale)) or real(step, scale)
    explorer.step.value = 0
    explorer.scale.value = 0.5
    assert calls[-2:] == [(0, 1.0), (0, 0.5)]
    assert not torch.equal(explorer.cache[(4, 1.0)][0], explorer.cache[(0, 1.0)][0])  # trained vs start
    assert torch.equal(explorer.cache[(0, 0.5)][0], explorer.cache[(0, 1.0)][0])  # B = 0 at step 0: scale is moot
    assert real(0, 1.0)[0] is explorer.cache[(0, 1.0)][0] and len(explorer.cache) == 3  # cached, not redrawn


def test_a_checkpoint_folder_that_would_be_cleared_is_refused_before_training(tmp_path):
    (tmp_path / "step_000000.safetensors").write_bytes(b"an earlier run")
    pipe = load_pipeline(device="cpu")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        train_dreambooth(pipe, few_shot_instance(2), TrainConfig(steps=2, batch_size=2), checkpoints=Checkpoints(tmp_path))
    assert not getattr(pipe.unet, "peft_config", None)  # no adapter was added
    assert (tmp_path / "step_000000.safetensors").read_bytes() == b"an earlier run"
    with pytest.raises(TypeError, match="Prior"):
        train_dreambooth(pipe, few_shot_instance(2), prior=few_shot_instance(2))
    assert not getattr(pipe.unet, "peft_config", None)
