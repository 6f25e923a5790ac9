import math

import pytest
import torch

from lorakit.adapters import load_adapter
from lorakit.concepts import CONCEPTS, adapter_path
from lorakit.interpolation import BlendStudy, concept_of
from lorakit.merge import (
    PEFT_TYPES,
    Factors,
    Mixer,
    factor_space_delta,
    lora_factors,
    peft_delta,
    weight_space_delta,
)
from lorakit.pipeline import generate, load_pipeline
from lorakit.widgets import BlendExplorer, ScaleExplorer

PROMPT = "a large orange striped circle"


@pytest.fixture(scope="module")
def mixer():
    pipe = load_pipeline(device="cpu")
    for concept in CONCEPTS:
        load_adapter(pipe, adapter_path(concept), concept)
    return Mixer(pipe, *CONCEPTS)


@pytest.fixture(scope="module")
def study(mixer, classifier):
    return BlendStudy(mixer, PROMPT, *CONCEPTS, n=2, sample_steps=3, classifier=classifier)


def _close(d1: dict, d2: dict, tol: float = 1e-5) -> bool:
    return d1.keys() == d2.keys() and all(torch.allclose(d1[k], d2[k], atol=tol) for k in d1)


def _sample(pipe) -> torch.Tensor:
    return generate(pipe, PROMPT, seed=0, n_per_prompt=2, num_inference_steps=3)


def test_weight_space_path_starts_and_ends_at_each_adapter(mixer):
    fa, fb = mixer.fa, mixer.fb
    assert _close(weight_space_delta(fa, fb, 0.0), {k: f.delta() for k, f in fa.items()})
    assert _close(weight_space_delta(fa, fb, 1.0), {k: f.delta() for k, f in fb.items()})


def test_factor_space_differs_by_exactly_the_cross_terms(mixer):
    fa, fb = mixer.fa, mixer.fb
    for t in (0.0, 1.0):  # one adapter's weight is zero: the two methods agree
        assert _close(factor_space_delta(fa, fb, t), weight_space_delta(fa, fb, t))
    t = 0.5
    diff = {k: factor_space_delta(fa, fb, t)[k] - weight_space_delta(fa, fb, t)[k] for k in fa}
    for k in list(fa)[:5]:
        a, b = fa[k], fb[k]
        cross = a.scaling * a.B @ b.A + b.scaling * b.B @ a.A - a.delta() - b.delta()
        assert torch.allclose(diff[k], t * (1 - t) * cross, atol=1e-5)
    assert max(float(d.abs().max()) for d in diff.values()) > 1e-3  # and they are not small here


def test_set_adapters_gives_the_weight_space_images(mixer):
    mixer.apply("set_adapters", 0.3)
    out = _sample(mixer.pipe)
    mixer.apply("weight", 0.3)
    assert (out.int() - _sample(mixer.pipe).int()).abs().max() <= 1
    mixer.restore()


@pytest.mark.parametrize("combination", PEFT_TYPES)
def test_every_peft_combination_runs_on_the_two_adapters(mixer, combination):
    deltas = peft_delta(mixer.fa, mixer.fb, (0.5, 0.5), combination)
    assert deltas.keys() == mixer.fa.keys()
    assert all(d.shape == mixer.fa[k].delta().shape and torch.isfinite(d).all() for k, d in deltas.items())


def test_peft_cat_and_full_rank_svd_are_exact_and_linear_has_sqrt_weights(mixer):
    fa, fb = mixer.fa, mixer.fb
    exact = weight_space_delta(fa, fb, 0.3)
    assert _close(peft_delta(fa, fb, (0.7, 0.3), "cat"), exact)
    assert _close(peft_delta(fa, fb, (0.7, 0.3), "svd", svd_rank=8), exact, tol=1e-4)  # no double scaling
    linear = peft_delta(fa, fb, (0.7, 0.3), "linear")
    k = next(iter(fa))
    ca, cb = math.sqrt(0.7 * fa[k].scaling), math.sqrt(0.3 * fb[k].scaling)
    assert torch.allclose(linear[k], (ca * fa[k].B + cb * fb[k].B) @ (ca * fa[k].A + cb * fb[k].A), atol=1e-5)


def test_toy_factors_known_answer():
    a = {"l": Factors(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [0.0]]), 1.0)}  # ΔW_a = e1 e1ᵀ
    b = {"l": Factors(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0], [1.0]]), 1.0)}  # ΔW_b = e2 e2ᵀ
    assert torch.equal(weight_space_delta(a, b, 0.5)["l"], torch.eye(2) / 2)
    assert torch.equal(factor_space_delta(a, b, 0.5)["l"], torch.ones(2, 2) / 4)  # cross terms off the diagonal


def test_strength_zero_keeps_the_blend_unlike_cross_attention_scale(mixer):
    mixer.apply("set_adapters", 0.3)
    blend = _sample(mixer.pipe)
    mixer.apply("set_adapters", 0.3, strength=0.0)
    mixer.apply("set_adapters", 0.3, strength=1.0)
    assert torch.equal(_sample(mixer.pipe), blend)
    # the diffusers trap this guards against: a call with scale 0 resets every adapter to weight 1
    generate(mixer.pipe, PROMPT, seed=0, num_inference_steps=2, cross_attention_kwargs={"scale": 0.0})
    assert not torch.equal(_sample(mixer.pipe), blend)
    mixer.restore()


def test_merged_methods_never_write_the_base_weights(mixer):
    before = {k: layer.get_base_layer().weight.clone() for k, layer in mixer.layers.items()}
    loaded = _sample(mixer.pipe)
    mixer.apply("peft_ties", 0.5)
    assert not torch.equal(_sample(mixer.pipe), loaded)
    assert all(torch.equal(before[k], layer.get_base_layer().weight) for k, layer in mixer.layers.items())
    mixer.restore()
    assert torch.equal(_sample(mixer.pipe), loaded)


def test_errors_name_the_choices(mixer):
    with pytest.raises(ValueError, match="choose from"):
        mixer.deltas("slerp", 0.5)
    with pytest.raises(ValueError, match="combination_type"):
        peft_delta(mixer.fa, mixer.fb, (0.5, 0.5), "average")
    with pytest.raises(KeyError, match="no adapter named 'sks'"):
        lora_factors(mixer.pipe, "sks")
    with pytest.raises(ValueError, match="attribute word"):
        concept_of("teal")


def test_study_caches_generations_and_measures_paths(study):
    calls = []
    real_apply = study.mixer.apply
    study.mixer.apply = lambda *a, **k: calls.append(a) or real_apply(*a, **k)
    try:
        first = study.images("weight", 0.5)
        assert study.images("weight", 0.5) is first and len(calls) == 1
        path = study.path("weight", (0.0, 0.5, 1.0))
        assert len(path.p_a) == len(path.diversity) == len(path.valid) == 3 and len(path.jumps) == 2
        assert 0 <= min(path.p_a) and max(path.p_b) <= 1 and path.max_jump == max(path.jumps)
        assert study.path("weight", (0.0, 0.5, 1.0)) is path
    finally:
        study.mixer.apply = real_apply
        study.mixer.restore()


def test_scale_widget_draws_the_chosen_scale(study):
    widget = ScaleExplorer(study, "orange", n=2)
    widget.scale.value = -1.0
    assert ("single", "orange", -1.0, study.seed, 2) in study.cache
    with pytest.raises(ValueError, match="unknown adapter"):
        ScaleExplorer(study, "purple")


@pytest.mark.slow
def test_blend_widget_calls_with_the_slider_values(study):
    widget = BlendExplorer(study, ["weight", "factor"], n=2)
    widget.t.value = 0.2
    widget.method.value = "factor"
    widget.seed.value = study.seed + 5
    assert widget.calls[-3:] == [("weight", 0.2, study.seed), ("factor", 0.2, study.seed),
                                 ("factor", 0.2, study.seed + 5)]
    assert ("factor", 0.2, study.seed + 5, 1.0, 2) in study.cache
    wide = BlendExplorer(study, ["weight"], n=study.n + 2)  # shows more images than the study keeps per point
    wide.show("weight", 0.2, study.seed)  # called directly: inside a widget an exception would only be printed
    assert ("weight", 0.2, study.seed, 1.0, study.n + 2) not in study.cache  # the study's own seed: its n, cut
    wide.show("weight", 0.2, study.seed + 1)
    assert ("weight", 0.2, study.seed + 1, 1.0, study.n + 2) in study.cache  # another seed: the widget's n
    study.mixer.restore()


def _base_images() -> torch.Tensor:
    return _sample(load_pipeline(device="cpu"))


@pytest.mark.slow
def test_a_second_mixer_and_unload_see_the_untouched_base_model():
    pipe = load_pipeline(device="cpu")
    for concept in CONCEPTS:
        load_adapter(pipe, adapter_path(concept), concept)
    first = Mixer(pipe, *CONCEPTS)
    first.apply("weight", 0.5)
    second = Mixer(pipe, *CONCEPTS)  # made while a merged mix is applied
    second.apply("factor", 0.3)
    second.restore()
    pipe.disable_lora()
    assert torch.equal(_sample(pipe), _base_images())
    first.apply("peft_ties", 0.5)
    pipe.unload_lora_weights()  # diffusers' own way back to the base model
    assert torch.equal(_sample(pipe), _base_images())


@pytest.mark.parametrize("bad", [{"t": float("nan")}, {"t": 0.5, "strength": float("nan")},
                                 {"t": float("inf")}])
def test_mixer_refuses_non_finite_weights(mixer, bad):
    with pytest.raises(ValueError, match="finite"):
        mixer.apply("weight", **bad)
    with pytest.raises(ValueError, match="finite"):
        mixer.apply_single("orange", float("nan"))


def test_a_mixer_needs_two_different_adapters(mixer):
    with pytest.raises(ValueError, match="twice"):
        Mixer(mixer.pipe, "orange", "orange")
