import pytest
import torch

from lorakit.control import (
    CROSS_ATTENTION_KV,
    Target,
    add_control_adapter,
    erasure_targets,
    keep_targets,
    slider_targets,
    train_control,
    train_control_seeds,
)
from lorakit.data import make_dataset
from lorakit.diffusion import TrainConfig, encode_data
from lorakit.pipeline import load_pipeline

ONE_STEP = TrainConfig(steps=1)


@pytest.fixture(scope="module")
def latents(pipe):
    return encode_data(pipe, make_dataset(16, seed=3))


def _unet_output(p) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x, t, h = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([100, 700]), torch.randn(2, 16, 64, generator=g)
    with torch.no_grad():
        return p.unet(x, t, encoder_hidden_states=h).sample


def test_targets_name_the_right_prompts():
    slider = slider_targets("large", "small", ["red", "blue"], ["circle"])
    assert slider == [Target("a red circle", "a large red circle", "a small red circle"),
                      Target("a blue circle", "a large blue circle", "a small blue circle")]
    assert erasure_targets("red", ["small"], ["square"]) == [Target("a small red square", "a small red square", "a small square")]
    assert erasure_targets("red", ["small"], ["square"], anchor="")[0].minus == ""  # ESD's own anchor
    assert keep_targets(["a green star"]) == [Target("a green star", "a green star", "a green star")]


def test_slider_trains_only_the_adapter_and_scale_zero_is_the_base_model(latents):
    base = load_pipeline(device="cpu")
    pipe = add_control_adapter(load_pipeline(device="cpu"), name="size")
    frozen = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if "lora_" not in n}
    losses, seconds = train_control(pipe, latents, slider_targets("large", "small", ["red"], ["circle"]), "slider",
                                    TrainConfig(steps=2, batch_size=4), name="size", progress=False)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses))) and seconds > 0
    after = dict(pipe.unet.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())  # base weights untouched
    assert any(after[n].abs().sum() > 0 for n in after if "lora_B" in n)  # B left zero: the adapter learnt
    pipe.unet.set_adapters(["size"], weights=[0.0])
    assert torch.allclose(_unet_output(pipe), _unet_output(base), atol=1e-6)
    pipe.unet.set_adapters(["size"], weights=[1.0])
    assert not torch.allclose(_unet_output(pipe), _unet_output(base), atol=1e-6)


def test_stacked_erasers_match_erasers_trained_alone(latents):
    targets, config = erasure_targets("red", ["large"], ["circle"]), TrainConfig(steps=2, lr=1e-3, batch_size=4)
    alone = []
    for seed in (0, 1):
        pipe = add_control_adapter(load_pipeline(device="cpu"), targets=CROSS_ATTENTION_KV, name="erase", seed=seed)
        losses, _ = train_control(pipe, latents, targets, "erasure", TrainConfig(steps=2, lr=1e-3, batch_size=4, seed=seed),
                                  name="erase", progress=False)
        alone.append((losses, _unet_output(pipe)))
    pipes = [add_control_adapter(load_pipeline(device="cpu"), targets=CROSS_ATTENTION_KV, name="erase", seed=s) for s in (0, 1)]
    stacked = train_control_seeds(pipes, latents, targets, "erasure", config, [0, 1], name="erase", progress=False)
    for pipe, (losses, _), (losses_alone, output_alone) in zip(pipes, stacked, alone):
        assert losses == pytest.approx(losses_alone, rel=1e-4)
        torch.testing.assert_close(_unet_output(pipe), output_alone, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="one seed per pipeline"):
        train_control_seeds(pipes, latents, targets, "erasure", config, [0], name="erase")


def test_keep_targets_ask_for_no_change(latents):
    pipe = add_control_adapter(load_pipeline(device="cpu"), targets=CROSS_ATTENTION_KV, name="erase")
    losses, _ = train_control(pipe, latents, keep_targets(["a green circle"]), "erasure", TrainConfig(steps=1, batch_size=4),
                              name="erase", progress=False)
    assert losses[0] < 1e-10  # a fresh adapter (B = 0) already predicts the frozen model's noise


def test_bad_arguments_say_what_to_do(pipe, latents):
    targets = erasure_targets("red", ["small"], ["circle"])
    with pytest.raises(ValueError, match="'slider' or 'erasure'"):
        train_control(pipe, latents, targets, "eraser", ONE_STEP)
    with pytest.raises(ValueError, match="no adapter named 'control'.*add_control_adapter"):
        train_control(pipe, latents, targets, "erasure", ONE_STEP)
    with pytest.raises(ValueError, match="no targets"):
        train_control(pipe, latents, [], "erasure", ONE_STEP)
    with pytest.raises(TypeError, match="TrainConfig"):
        train_control(pipe, latents, targets, "erasure", {"steps": 1})
    with pytest.raises(ValueError, match="augment and weight_decay"):
        train_control(pipe, latents, targets, "erasure", TrainConfig(steps=1, weight_decay=0.1))
