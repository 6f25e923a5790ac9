import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import LoraConfig
from torch import nn

from lorakit.exercises.lora import check_lora_layer, check_merge
from lorakit.lora import (
    LoRALinear,
    add_lora,
    load_lora_state_dict,
    lora_layers,
    lora_state_dict,
    merge_lora,
    remove_lora,
    set_lora_multiplier,
    unmerge_lora,
)


def _layer(rank=4, alpha=8.0, rslora=False, seed=0, in_f=16, out_f=12):
    torch.manual_seed(seed)
    return LoRALinear(nn.Linear(in_f, out_f), rank=rank, alpha=alpha, rslora=rslora)


def test_layer_maths_against_a_dense_reference():
    layer = _layer()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5, 16)  # (batch, tokens, in)
    W, b, A, B = layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B
    ref = x @ W.T + b + (8.0 / 4) * (x @ A.T @ B.T)
    assert torch.allclose(layer(x), ref, atol=1e-6)
    assert torch.allclose(layer.delta_weight(), 2.0 * B @ A)
    assert layer.lora_A.shape == (4, 16) and layer.lora_B.shape == (12, 4)


def test_rslora_scale():
    assert _layer(rank=4, alpha=8.0, rslora=True).scaling == pytest.approx(8.0 / math.sqrt(4))
    assert _layer(rank=4, alpha=8.0).scaling == pytest.approx(2.0)


def test_fresh_adapter_changes_nothing_bit_for_bit():
    base = nn.Linear(16, 12)
    x = torch.randn(7, 16)
    expected = base(x)
    layer = LoRALinear(base, rank=4, alpha=4)
    assert torch.equal(layer(x), expected)
    assert not layer.base.weight.requires_grad and layer.lora_A.requires_grad and layer.lora_B.requires_grad


def test_init_follows_peft_kaiming_default_or_gaussian_with_b_zero():
    """A from kaiming_uniform_(a=sqrt(5)) (peft's default init) or N(0, 1/r) (peft's 'gaussian'); B zeros."""
    torch.manual_seed(3)
    ours = LoRALinear(nn.Linear(64, 32), rank=8, alpha=8)
    torch.manual_seed(3)
    _ = nn.Linear(64, 32)
    ref = torch.empty(8, 64)
    nn.init.kaiming_uniform_(ref, a=math.sqrt(5))
    assert torch.equal(ours.lora_A, ref) and torch.count_nonzero(ours.lora_B) == 0
    gauss = LoRALinear(nn.Linear(256, 256), rank=4, alpha=4, init="gaussian")
    assert gauss.lora_A.std().item() == pytest.approx(1 / 4, rel=0.1)


@pytest.mark.parametrize("rank", [0, -1, 13])
def test_bad_rank_is_refused(rank):
    with pytest.raises(ValueError, match="rank must satisfy 1 <= rank <= min"):
        LoRALinear(nn.Linear(16, 12), rank=rank, alpha=1)


@pytest.mark.parametrize("alpha", [0, -2.0])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        LoRALinear(nn.Linear(16, 12), rank=2, alpha=alpha)


def test_non_int_rank_and_non_linear_base_are_refused():
    with pytest.raises(TypeError, match="rank must be an int"):
        LoRALinear(nn.Linear(4, 4), rank=2.0, alpha=1)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Conv2d(4, 4, 1), rank=2, alpha=1)


@settings(max_examples=40, deadline=None)
@given(
    in_f=st.integers(1, 24),
    out_f=st.integers(1, 24),
    rank_frac=st.floats(0.01, 1.0),
    alpha=st.floats(0.1, 64.0),
    seed=st.integers(0, 2**16),
)
def test_merge_unmerge_round_trip(in_f, out_f, rank_frac, alpha, seed):
    rank = max(1, int(rank_frac * min(in_f, out_f)))
    layer = _layer(rank=rank, alpha=alpha, seed=seed, in_f=in_f, out_f=out_f)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, in_f)
    W0 = layer.base.weight.detach().clone()
    unmerged = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), unmerged, atol=1e-4 * (1 + unmerged.abs().max().item()))
    layer.unmerge()
    assert torch.allclose(layer.base.weight, W0, atol=1e-5 * (1 + layer.delta_weight().abs().max().item()))


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleDict({"to_q": nn.Linear(8, 8), "to_k": nn.Linear(8, 8), "to_out": nn.Sequential(nn.Linear(8, 8))})
        self.ff = nn.Linear(8, 8)

    def forward(self, x):
        return self.ff(self.attn["to_out"](self.attn["to_q"](x) + self.attn["to_k"](x)))


def test_add_lora_wraps_targets_and_freezes_the_rest():
    model = _Tiny()
    names = add_lora(model, ["to_q", "to_out.0"], rank=2, alpha=2)
    assert names == ["attn.to_q", "attn.to_out.0"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"attn.to_q.lora_A", "attn.to_q.lora_B", "attn.to_out.0.lora_A", "attn.to_out.0.lora_B"}


def test_unknown_target_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"\['to_z'\] match no nn.Linear.*to_k.*to_q") as err:
        add_lora(_Tiny(), ["to_q", "to_z"], rank=2, alpha=2)
    assert "ff" in str(err.value)


def test_model_level_merge_scale_remove_and_state_dict():
    model = _Tiny()
    add_lora(model, ["to_q", "to_k"], rank=2, alpha=4)
    for layer in lora_layers(model).values():
        with torch.no_grad():
            layer.lora_B.normal_()
    x = torch.randn(3, 8)
    y = model(x)
    merge_lora(model)
    assert torch.allclose(model(x), y, atol=1e-5)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        set_lora_multiplier(model, 0.5)
    unmerge_lora(model)
    set_lora_multiplier(model, 0.0)
    state = lora_state_dict(model)
    assert set(state) == {f"attn.to_{p}.lora_{ab}.weight" for p in "qk" for ab in "AB"}
    base_only = model(x)
    set_lora_multiplier(model, 1.0)
    remove_lora(model)
    assert not lora_layers(model) and torch.allclose(model(x), base_only, atol=1e-6)

    other = _Tiny()
    other.load_state_dict(model.state_dict())
    add_lora(other, ["to_q", "to_k"], rank=2, alpha=4)
    load_lora_state_dict(other, state)
    assert torch.allclose(other(x), y, atol=1e-5)


def test_load_state_dict_that_does_not_fit_says_why():
    model = _Tiny()
    add_lora(model, ["to_q"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="missing keys"):
        load_lora_state_dict(model, {"attn.to_k.lora_A.weight": torch.zeros(2, 8)})
    with pytest.raises(ValueError, match=r"expects shape \(2, 8\), the state dict has \(4, 8\)"):
        load_lora_state_dict(model, {"attn.to_q.lora_A.weight": torch.zeros(4, 8), "attn.to_q.lora_B.weight": torch.zeros(8, 4)})
    with pytest.raises(ValueError, match="add_lora"):
        lora_state_dict(_Tiny())


def test_equivalent_to_peft_on_random_weights():
    from peft import inject_adapter_in_model

    torch.manual_seed(0)
    ours, theirs = _Tiny(), _Tiny()
    theirs.load_state_dict(ours.state_dict())
    add_lora(ours, ["to_q", "to_k"], rank=4, alpha=8)
    theirs = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k"]), theirs)
    for layer in lora_layers(ours).values():
        with torch.no_grad():
            layer.lora_B.normal_()
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(theirs, lora_state_dict(ours))
    x = torch.randn(5, 8)
    assert torch.allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


# -- lorakit.exercises.lora catches the typical mistakes ----------------------------------------------


class _Good(nn.Module):
    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.s = alpha / rank

    def forward(self, x):
        return self.base(x) + self.s * (x @ self.lora_A.T @ self.lora_B.T)


class _NoScale(_Good):
    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


class _Transposed(_Good):
    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.lora_A = nn.Parameter(torch.randn(base.in_features, rank) * 0.1)
        self.lora_B = nn.Parameter(torch.zeros(rank, base.out_features))


class _Unfrozen(_Good):
    def __init__(self, base, rank, alpha):
        super().__init__(base, rank, alpha)
        self.base.requires_grad_(True)


def test_check_passes_a_correct_layer_and_lorakits_own(capsys):
    assert check_lora_layer(_Good)
    assert check_lora_layer(LoRALinear)
    assert "[OK]" in capsys.readouterr().out


@pytest.mark.parametrize(
    "cls, hint",
    [(_NoScale, "did you apply the scale alpha/rank|apply the scale alpha / rank"),
     (_Transposed, "transposed"),
     (_Unfrozen, "still trainable")],
)
def test_check_names_the_mistake(cls, hint, capsys):
    assert not check_lora_layer(cls)
    out = capsys.readouterr().out
    assert "[HINT]" in out
    assert any(h in out for h in hint.split("|")), out


def test_check_merge(capsys):
    assert check_merge(lambda base, A, B, s: base.weight + s * B @ A)
    assert not check_merge(lambda base, A, B, s: base.weight + B @ A)
    assert "lacks the scale" in capsys.readouterr().out
    assert not check_merge(lambda base, A, B, s: base.weight + s * A @ B)
    assert "B @ A" in capsys.readouterr().out


# -- the from-scratch LoRA on the real pipeline, through diffusers and peft -----------------------


@pytest.mark.slow
def test_scratch_lora_loads_into_diffusers_with_alpha_and_back(tmp_path):
    from diffusers import StableDiffusionPipeline

    from lorakit.lora import from_peft_state_dict, peft_metadata, to_peft_state_dict
    from lorakit.pipeline import LORA_TARGETS, generate, load_pipeline

    pipe = load_pipeline(device="cpu")
    names = add_lora(pipe.unet, LORA_TARGETS, rank=4, alpha=2.0)  # alpha != rank: the scale must travel
    assert len(names) == 56
    torch.manual_seed(0)
    for layer in lora_layers(pipe.unet).values():
        with torch.no_grad():
            layer.lora_B.normal_(0, 0.2)
    prompts = ["a large red circle", "a small blue square"]
    ours = generate(pipe, prompts, seed=4, num_inference_steps=6)

    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=to_peft_state_dict(pipe.unet),
                                              unet_lora_adapter_metadata=peft_metadata(pipe.unet))
    stock = load_pipeline(device="cpu")
    stock.load_lora_weights(tmp_path, adapter_name="scratch")
    theirs = generate(stock, prompts, seed=4, num_inference_steps=6)
    assert (ours.int() - theirs.int()).abs().max() <= 1, "diffusers reproduces the from-scratch adapter"

    from safetensors.torch import load_file

    back = load_pipeline(device="cpu")
    add_lora(back.unet, LORA_TARGETS, rank=4, alpha=2.0)
    load_lora_state_dict(back.unet, from_peft_state_dict(load_file(str(tmp_path / "pytorch_lora_weights.safetensors"))))
    assert torch.equal(generate(back, prompts, seed=4, num_inference_steps=6), ours)


def test_from_peft_state_dict_renames_and_rejects():
    from lorakit.lora import from_peft_state_dict

    t = torch.zeros(1)
    renamed = from_peft_state_dict({
        "unet.a.to_q.lora_A.weight": t,
        "base_model.model.a.to_k.lora_B.default.weight": t,
        "a.to_v.lora.down.weight": t,
    })
    assert set(renamed) == {"a.to_q.lora_A.weight", "a.to_k.lora_B.weight", "a.to_v.lora_A.weight"}
    with pytest.raises(ValueError, match="not a LoRA weight"):
        from_peft_state_dict({"conv_in.weight": t})


@pytest.mark.slow
def test_scratch_and_peft_train_identically_on_the_unet():
    from peft.utils import set_peft_model_state_dict

    from lorakit.data import make_dataset
    from lorakit.diffusion import TrainConfig, encode_data
    from lorakit.finetune import train
    from lorakit.pipeline import LORA_TARGETS, load_pipeline

    scratch, peft_pipe = load_pipeline(device="cpu"), load_pipeline(device="cpu")
    torch.manual_seed(0)
    add_lora(scratch.unet, LORA_TARGETS, rank=4, alpha=4)
    peft_pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(LORA_TARGETS)))
    set_peft_model_state_dict(peft_pipe.unet, lora_state_dict(scratch.unet))
    trainable = [n for n, p in peft_pipe.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(p.requires_grad for p in peft_pipe.text_encoder.parameters()), "load_pipeline freezes"
    data = encode_data(scratch, make_dataset(64, seed=3, include=["orange"]))
    a = train(scratch, data, TrainConfig(steps=3, lr=1e-3), progress=False)
    b = train(peft_pipe, data, TrainConfig(steps=3, lr=1e-3), progress=False)
    assert a == pytest.approx(b, rel=1e-5)


def test_train_refuses_a_pipeline_with_nothing_to_train():
    from lorakit.data import make_dataset
    from lorakit.diffusion import TrainConfig
    from lorakit.finetune import train
    from lorakit.pipeline import load_pipeline

    with pytest.raises(ValueError, match="nothing to train"):
        train(load_pipeline(device="cpu"), make_dataset(4, seed=0), TrainConfig(steps=1))


def test_text_encoder_lora_trains_only_its_adapter():
    from lorakit.data import make_dataset
    from lorakit.diffusion import TrainConfig
    from lorakit.finetune import train
    from lorakit.pipeline import load_pipeline

    pipe = load_pipeline(device="cpu")
    add_lora(pipe.text_encoder, ["q_proj", "v_proj"], rank=2, alpha=2)
    frozen = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items() if "lora_" not in k}
    losses = train(pipe, make_dataset(16, seed=0, include=["orange"]), TrainConfig(steps=2, batch_size=4, lr=1e-2), progress=False)
    assert len(losses) == 2
    after = pipe.text_encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())
    assert any(torch.count_nonzero(layer.lora_B) for layer in lora_layers(pipe.text_encoder).values())


# -- state that must never be silently corrupted ------------------------------------------------


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_unmerge_after_loading_other_factors_is_refused_and_base_comes_back():
    model = _Tiny()
    base = _weights(model)["attn.to_q.weight"]
    add_lora(model, ["to_q", "to_k"], rank=2, alpha=4)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_()
    other = {k: torch.randn_like(v) * 3 for k, v in lora_state_dict(model).items()}
    merge_lora(model)
    with pytest.raises(RuntimeError, match="unmerge_lora"):
        load_lora_state_dict(model, other)  # would leave the old update in W
    with torch.no_grad():  # even if the factors change behind its back, unmerge removes what merge added
        lora_layers(model)["attn.to_q"].lora_B.mul_(5)
    unmerge_lora(model)
    assert torch.allclose(lora_layers(model)["attn.to_q"].base.weight, base, atol=1e-6)


def test_a_second_add_lora_keeps_the_first_adapters_trainable():
    model = _Tiny()
    add_lora(model, ["to_q"], rank=2, alpha=2)
    add_lora(model, ["to_k"], rank=2, alpha=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"attn.{m}.lora_{ab}" for m in ("to_q", "to_k") for ab in "AB"}
    with pytest.raises(ValueError, match="already have LoRA"):
        add_lora(model, ["to_q"], rank=2, alpha=2)


def test_add_lora_checks_everything_before_wrapping_anything():
    model = _Tiny()
    model.attn["to_k"] = nn.Linear(8, 2)  # rank 4 fits to_q (8x8) but not to_k (8->2)
    before = _weights(model)
    with pytest.raises(ValueError, match="rank must satisfy"):
        add_lora(model, ["to_q", "to_k"], rank=4, alpha=4)
    assert lora_layers(model) == {} and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())  # not even frozen


def test_a_string_of_targets_is_refused_not_read_letter_by_letter():
    with pytest.raises(TypeError, match=r"\['to_q'\]"):
        add_lora(_Tiny(), "to_q", rank=2, alpha=2)


def test_add_lora_on_a_peft_model_says_so():
    from peft import inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q"]), _Tiny())
    with pytest.raises(ValueError, match="peft LoRA layers"):
        add_lora(model, ["to_q"], rank=2, alpha=2)


def test_a_state_dict_that_fails_late_changes_no_layer():
    model = _Tiny()
    add_lora(model, ["to_q", "to_k"], rank=2, alpha=2)
    before = _weights(model)
    state = {k: torch.ones_like(v) for k, v in lora_state_dict(model).items()}
    state["attn.to_q.lora_B.weight"] = torch.ones(8, 3)  # the last layer checked is wrong
    state["attn.to_k.lora_A.weight"] = torch.full((2, 8), float("nan"))
    with pytest.raises(ValueError, match="nothing was loaded"):
        load_lora_state_dict(model, state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_set_lora_multiplier_refuses_non_finite(scale):
    model = _Tiny()
    add_lora(model, ["to_q"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="finite"):
        set_lora_multiplier(model, scale)
    assert lora_layers(model)["attn.to_q"].multiplier == 1.0


class _Unwritten(nn.Module):
    """A learner's layer whose __init__ is done but whose forward is still the stub."""

    def __init__(self, base, rank, alpha):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x):
        raise NotImplementedError


class _ShapeBug(_Unwritten):
    def forward(self, x):
        return self.base(x) + x @ self.lora_B @ self.lora_A  # wrong order: a shape error


def test_checks_never_raise_whatever_the_learners_code_does(capsys):
    assert check_lora_layer(_Unwritten) is False
    assert "not written yet" in capsys.readouterr().out
    assert check_lora_layer(_ShapeBug) is False
    out = capsys.readouterr().out
    assert "RuntimeError" in out and "shape" in out and "x @ self.lora_B" in out
    assert check_merge(lambda base, A, B, s: (_ for _ in ()).throw(NotImplementedError)) is False
    assert check_merge(lambda base, A, B, s: base.weight + s * B[:, :1] @ A) is False
    assert check_merge(lambda base, A, B, s: 1 / 0) is False
    assert "ZeroDivisionError" in capsys.readouterr().out
