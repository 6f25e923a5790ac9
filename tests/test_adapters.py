import pytest
import torch

from lorakit.adapters import (
    CheckpointSaver,
    add_adapter,
    adapter_state,
    list_checkpoints,
    load_adapter_weights,
    save_adapter,
)
from lorakit.data import few_shot_instance
from lorakit.diffusion import TrainConfig
from lorakit.finetune import train
from lorakit.pipeline import generate, load_pipeline


@pytest.fixture(scope="module")
def trained():
    """A pipeline with a briefly trained conv LoRA whose alpha differs from its rank."""
    pipe = add_adapter(load_pipeline(device="cpu"), rank=4, alpha=2, conv=True, seed=0)
    train(pipe, few_shot_instance(4), TrainConfig(steps=6, lr=1e-2, batch_size=4), progress=False)
    return pipe


def _sample(pipe):
    return generate(pipe, ["a sks triangle", "a large red circle"], seed=3, num_inference_steps=6)


def test_a_new_adapter_follows_its_models_mode():
    """peft's new layers start in training mode; add_adapter puts them in the model's (here: inference, dropout off)."""
    pipe = add_adapter(load_pipeline(device="cpu"), rank=2, dropout=0.1, seed=0)
    assert not [n for n, m in [*pipe.unet.named_modules(), *pipe.text_encoder.named_modules()] if m.training]
    images = [generate(pipe, "a large red circle", seed=0, num_inference_steps=4) for _ in range(2)]
    assert torch.equal(*images)  # no dropout mask drawn while sampling


def test_only_lora_factors_train_and_they_reach_convs_and_text_encoder():
    pipe = add_adapter(load_pipeline(device="cpu"), rank=2, conv=True)
    trainable = [n for part in (pipe.unet, pipe.text_encoder) for n, p in part.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("resnets" in n and "conv1" in n for n in trainable)
    assert any("self_attn.q_proj" in n for n in trainable)
    with pytest.raises(ValueError, match="rank"):
        add_adapter(load_pipeline(device="cpu"), rank=0)


@pytest.mark.slow
def test_saved_file_reloads_with_stock_diffusers_identically_alpha_included(trained, tmp_path):
    path = save_adapter(trained, tmp_path / "sks.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["sks.safetensors"]  # no temp files left behind
    fresh = load_pipeline(device="cpu")
    fresh.load_lora_weights(path)
    assert fresh.unet.peft_config["default_0"].lora_alpha == 2  # alpha != rank survived
    assert torch.equal(_sample(fresh), _sample(trained))


def test_load_adapter_weights_restores_a_checkpoint(trained, tmp_path):
    path = save_adapter(trained, tmp_path / "a.safetensors")
    before = adapter_state(trained)
    with torch.no_grad():
        for part in (trained.unet, trained.text_encoder):
            for n, p in part.named_parameters():
                if "lora_B" in n:
                    p.zero_()
    load_adapter_weights(trained, path)
    after = adapter_state(trained)
    assert before.keys() == after.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_errors_name_the_problem(trained, tmp_path):
    with pytest.raises(KeyError, match="no adapter named 'other'"):
        adapter_state(trained, "other")
    with pytest.raises(FileNotFoundError, match="no LoRA file"):
        load_adapter_weights(trained, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="every"):
        CheckpointSaver(trained, tmp_path, 0)


def test_checkpoints_every_k_steps(tmp_path):
    pipe = add_adapter(load_pipeline(device="cpu"), rank=1, conv=False, text_encoder=False)
    saver = CheckpointSaver(pipe, tmp_path, 2)
    train(pipe, few_shot_instance(2), TrainConfig(steps=5, batch_size=2), progress=False, on_step=saver)
    found = list_checkpoints(tmp_path)
    assert list(found) == [2, 4] and found[4].name == "step_000004.safetensors"
    assert saver.paths == found


def test_checkpoint_folders_are_never_cleared_without_overwrite(tmp_path):
    pipe = add_adapter(load_pipeline(device="cpu"), rank=1, conv=False, text_encoder=False)
    earlier = tmp_path / "run"
    earlier.mkdir()
    (earlier / "step_000003.safetensors").write_bytes(b"a previous run's checkpoint")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        CheckpointSaver(pipe, earlier, 2)
    assert (earlier / "step_000003.safetensors").read_bytes() == b"a previous run's checkpoint"
    saver = CheckpointSaver(pipe, earlier, 2, overwrite=True)  # explicit: the earlier run's files go
    saver(2, 0.0)
    assert list(list_checkpoints(earlier)) == [2]

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "step_000003.safetensors").write_bytes(b"checkpoint")
    (mixed / "notes.txt").write_text("the learner's notes")
    for overwrite in (False, True):  # a folder holding anything else is refused, flag or not
        with pytest.raises(FileExistsError, match="notes.txt"):
            CheckpointSaver(pipe, mixed, 2, overwrite=overwrite)
    assert sorted(p.name for p in mixed.iterdir()) == ["notes.txt", "step_000003.safetensors"]


def test_each_kind_of_adapter_trains_only_its_own_weights_with_its_own_size():
    """LoRA r·(in+out) per layer; DoRA adds one magnitude per output; LoHa two rank-r pairs; LoKr Kronecker factors."""
    counts = {}
    for kind in ("lora", "dora", "loha", "lokr"):
        pipe = add_adapter(load_pipeline(device="cpu"), rank=4, alpha=8, kind=kind)
        trained = {n: p for part in (pipe.unet, pipe.text_encoder) for n, p in part.named_parameters() if p.requires_grad}
        marker = {"lora": ".lora_", "dora": ".lora_", "loha": ".hada_", "lokr": ".lokr_"}[kind]
        assert all(marker in n for n in trained), kind  # DoRA's magnitudes are lora_magnitude_vector
        counts[kind] = sum(p.numel() for p in trained.values())
    outputs = sum(m.out_features for pipe in [add_adapter(load_pipeline(device="cpu"), rank=4)]
                  for part in (pipe.unet, pipe.text_encoder) for n, m in part.named_modules()
                  if isinstance(m, torch.nn.Linear) and n.endswith("base_layer"))
    assert counts["lora"] == 37_248 and counts["dora"] == counts["lora"] + outputs
    assert counts["loha"] == 2 * counts["lora"] and counts["lokr"] < counts["lora"]


@pytest.mark.parametrize("bad, match", [({"kind": "lycoris"}, "kind must be one of"),
                                        ({"kind": "loha", "dropout": 0.1}, "dropout is LoRA's")])
def test_an_unknown_kind_or_option_is_refused_before_the_pipeline_changes(bad, match):
    pipe = load_pipeline(device="cpu")
    with pytest.raises(ValueError, match=match):
        add_adapter(pipe, **bad)
    assert not getattr(pipe.unet, "peft_config", None)
