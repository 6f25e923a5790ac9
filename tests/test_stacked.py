"""Stacked training must train exactly the adapters separate runs would, and refuse what it cannot stack."""

import pytest
import torch
from torch import nn

from lorakit.adapters import adapter_state, add_adapter
from lorakit.data import few_shot_instance
from lorakit.diffusion import TrainConfig
from lorakit.dreambooth import Checkpoints, train_dreambooth, train_dreambooth_seeds
from lorakit.finetune import Prior
from lorakit.pipeline import load_pipeline
from lorakit.stacked import GroupedConv2d, GroupedLinear, StackedAdapters, train_stacked

CONFIG = TrainConfig(steps=3, lr=3e-3, batch_size=2)


def test_grouped_layers_send_each_group_through_its_own_weights():
    torch.manual_seed(0)
    linears = [nn.Linear(6, 3, bias=False) for _ in range(3)]
    x = torch.randn(3 * 2, 5, 6)  # (K*G, tokens, in)
    expected = torch.cat([lin(x[2 * k : 2 * k + 2]) for k, lin in enumerate(linears)])
    torch.testing.assert_close(GroupedLinear(linears)(x), expected)
    convs = [nn.Conv2d(4, 2, 3, padding=1, bias=False) for _ in range(3)]
    x = torch.randn(3 * 2, 4, 8, 8)
    expected = torch.cat([conv(x[2 * k : 2 * k + 2]) for k, conv in enumerate(convs)])
    torch.testing.assert_close(GroupedConv2d(convs)(x), expected)


def test_stacked_seeds_train_the_adapters_separate_runs_train(tmp_path):
    instance, prior = few_shot_instance(5), Prior(few_shot_instance(6, seed=3))
    alone = []
    for seed in (0, 1):
        pipe = load_pipeline(device="cpu")
        run = train_dreambooth(pipe, instance, TrainConfig(steps=3, lr=3e-3, batch_size=2, seed=seed), prior=prior)
        alone.append((adapter_state(pipe), run.losses))
    pipes = [load_pipeline(device="cpu") for _ in range(2)]
    runs = train_dreambooth_seeds(pipes, instance, CONFIG, [0, 1], prior=prior,
                                  checkpoints=[Checkpoints(tmp_path / f"s{s}", every=3) for s in (0, 1)])
    for pipe, run, (state, losses) in zip(pipes, runs, alone):
        assert run.losses == pytest.approx(losses, rel=1e-4)
        stacked = adapter_state(pipe)
        assert stacked.keys() == state.keys()
        for key in state:
            torch.testing.assert_close(stacked[key], state[key], rtol=1e-3, atol=1e-4)  # Adam: rounding of near-zero grads
        assert list(run.checkpoints) == [0, 3]  # each seed's own checkpoints, in its own folder
    # the carrier pipeline is an ordinary peft pipeline again: its adapter layers are its own, not stacked
    assert not any(isinstance(m, (GroupedLinear, GroupedConv2d)) for m in pipes[0].unet.modules())


def test_every_stacked_pipeline_samples_with_lora_dropout_off():
    """After stacked training, no layer of any seed's pipeline is left in training mode (LoRA dropout would stay on)."""
    pipes = [load_pipeline(device="cpu") for _ in range(2)]
    train_dreambooth_seeds(pipes, few_shot_instance(5), CONFIG, [0, 1], dropout=0.1)
    for pipe in pipes:
        assert not [n for n, m in [*pipe.unet.named_modules(), *pipe.text_encoder.named_modules()] if m.training]


def test_stacking_refuses_mismatched_or_repeated_pipelines():
    a, b = load_pipeline(device="cpu"), load_pipeline(device="cpu")
    add_adapter(a, rank=4)
    add_adapter(b, rank=2)
    with pytest.raises(ValueError, match="one rank"):
        StackedAdapters([a, b])
    with pytest.raises(ValueError, match="passed twice"):
        StackedAdapters([a, a])
    with pytest.raises(ValueError, match="no LoRA adapter"):
        StackedAdapters([load_pipeline(device="cpu")])
    with pytest.raises(ValueError, match="seed only"):
        train_stacked([a, b], few_shot_instance(5), [CONFIG, TrainConfig(steps=3, lr=1e-3, batch_size=2)])
    with pytest.raises(ValueError, match="one seed per pipeline"):
        train_dreambooth_seeds([load_pipeline(device="cpu")], few_shot_instance(5), CONFIG, [0, 1])
