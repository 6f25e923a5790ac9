import pytest
import torch
from torch import nn

from lorakit.adapters import add_adapter
from lorakit.data import few_shot_instance, make_dataset
from lorakit.diffusion import TrainConfig, encode_data
from lorakit.finetune import Evaluation, Prior, finetune, train
from lorakit.lora import add_lora
from lorakit.pipeline import load_pipeline

ONE_STEP = TrainConfig(steps=1)


@pytest.fixture(scope="module")
def encoded():
    pipe = load_pipeline(device="cpu")
    return encode_data(pipe, make_dataset(48, seed=0, include=["orange"]))


def _frozen_weights(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


@pytest.mark.slow
def test_lora_history_is_consistent_and_base_weights_stay_bitwise(encoded):
    pipe = load_pipeline(device="cpu")
    before = _frozen_weights(pipe)
    along = Evaluation(2, ["a large orange circle"], ["a small red square"], n=1)
    pipe, h = finetune(pipe, encoded, TrainConfig(steps=4), method="lora", rank=2, evaluation=along, progress=False)
    assert len(h.loss) == 4 and all(l == l for l in h.loss)
    assert h.eval_steps == [0, 2, 4]
    assert len(h.concept_accuracy) == len(h.base_accuracy) == 3
    assert h.seconds > 0 and h.seconds_per_step == pytest.approx(h.seconds / 4)
    trainable = sum(p.numel() for p in pipe.unet.parameters() if p.requires_grad) + \
        sum(p.numel() for p in pipe.text_encoder.parameters() if p.requires_grad)
    assert h.memory.trainable_params == trainable
    after = {k.replace(".base.", "."): v for k, v in pipe.unet.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def test_full_finetuning_changes_every_unet_weight(encoded):
    pipe = load_pipeline(device="cpu")
    before = _frozen_weights(pipe)
    pipe, h = finetune(pipe, encoded, TrainConfig(steps=2, lr=1e-3), method="full", text_encoder=False, progress=False)
    after = pipe.unet.state_dict()
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not unchanged, f"untouched by full fine-tuning: {unchanged[:3]}"
    assert h.memory.trainable_params == sum(v.numel() for v in before.values())
    assert h.memory.optimizer_bytes >= 2 * h.memory.param_bytes  # AdamW's two moments


def test_full_finetuning_of_the_text_encoder_leaves_the_token_table_as_lora_does(encoded):
    pipe = load_pipeline(device="cpu")
    table = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    layer = pipe.text_encoder.encoder.layers[0].mlp.fc1.weight.detach().clone()
    pipe, _ = finetune(pipe, encoded, TrainConfig(steps=2, lr=1e-3), method="full", progress=False)
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, table)
    assert not torch.equal(pipe.text_encoder.encoder.layers[0].mlp.fc1.weight, layer)


def test_finetune_rejects_unknown_method(encoded):
    with pytest.raises(ValueError, match="'lora' or 'full'"):
        finetune(load_pipeline(device="cpu"), encoded, method="dora")



def test_peak_training_memory_runs_in_a_fresh_process():
    from lorakit.finetune import peak_training_memory

    assert peak_training_memory("lora", rank=1, steps=1) > 0
    with pytest.raises(RuntimeError, match="memory probe failed"):
        peak_training_memory("dora", rank=1, steps=1)


@pytest.mark.slow
def test_prior_preservation_adds_weighted_prior_loss():
    """Before the first update the step loss is instance + weight x prior, with the same draws for any weight."""
    instance, prior = few_shot_instance(3), make_dataset(8, seed=4, include=["triangle"])
    first = []
    for weight in (0.0, 1.0, 2.0):
        pipe = add_adapter(load_pipeline(device="cpu"), rank=1, text_encoder=False)
        first.append(train(pipe, instance, TrainConfig(steps=1, batch_size=2), prior=Prior(prior, weight), progress=False)[0])
    prior_loss = first[1] - first[0]
    assert prior_loss > 0 and first[2] - first[1] == pytest.approx(prior_loss, rel=1e-4)
    with pytest.raises(ValueError, match="prior's weight"):
        Prior(prior, -1.0)


@pytest.mark.slow
def test_augment_trains_on_the_views_and_needs_images(encoded):
    pipe = add_adapter(load_pipeline(device="cpu"), rank=1, text_encoder=False)
    plain = train(pipe, few_shot_instance(2), TrainConfig(steps=2, batch_size=2), progress=False)
    pipe = add_adapter(load_pipeline(device="cpu"), rank=1, text_encoder=False)
    views = train(pipe, few_shot_instance(2), TrainConfig(steps=2, batch_size=2, augment=True), progress=False)
    assert plain != views  # different images in the batches
    with pytest.raises(ValueError, match="needs images"):
        train(pipe, encoded, TrainConfig(steps=1, augment=True), progress=False)


# -- arguments are checked before the pipeline changes ------------------------------------------


def _module_names(pipe) -> list[str]:
    return [n for part in (pipe.unet, pipe.text_encoder) for n, _ in part.named_modules()]


@pytest.mark.parametrize("bad", [{"steps": 0}, {"steps": -1}, {"lr": float("nan")}, {"lr": 0.0}, {"batch_size": 0},
                                 {"seed": -1}, {"weight_decay": -0.1}, {"caption_dropout": 1.0}])
def test_train_config_refuses_impossible_settings_when_made(bad):
    with pytest.raises(ValueError, match="must be|share of samples"):
        TrainConfig(**bad)


def test_evaluation_wants_a_list_of_prompts():
    with pytest.raises(TypeError, match="list of prompts"):
        Evaluation(2, concept_prompts="a red circle")


@pytest.mark.parametrize("bad", [{"alpha": 0}, {"alpha": -4.0}, {"alpha": float("nan")}, {"rank": 0},
                                 {"config": {"steps": 1}}, {"evaluation": 5}])
def test_finetune_refuses_bad_arguments_before_adding_any_layer(encoded, bad):
    pipe = load_pipeline(device="cpu")
    names = _module_names(pipe)
    with pytest.raises((ValueError, TypeError), match="must be"):
        finetune(pipe, encoded, progress=False, **bad)
    assert _module_names(pipe) == names  # unchanged: a retry with good arguments works
    finetune(pipe, encoded, ONE_STEP, rank=1, progress=False)


def test_finetune_twice_on_one_pipeline_says_so(encoded):
    pipe, _ = finetune(load_pipeline(device="cpu"), encoded, ONE_STEP, rank=1, progress=False)
    with pytest.raises(ValueError, match="already has LoRA layers.*fresh pipeline"):
        finetune(pipe, encoded, ONE_STEP, rank=1, progress=False)
    peft_pipe = add_adapter(load_pipeline(device="cpu"), rank=1)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        finetune(peft_pipe, encoded, ONE_STEP, rank=1, progress=False)


def test_train_refuses_merged_adapters_and_impossible_batches(encoded):
    from lorakit.lora import merge_lora
    from lorakit.pipeline import LORA_TARGETS

    pipe = load_pipeline(device="cpu")
    add_lora(pipe.unet, LORA_TARGETS, rank=1, alpha=1)
    merge_lora(pipe.unet)  # a merged adapter gets no gradient: training would silently do nothing
    with pytest.raises(ValueError, match="merged.*unmerge"):
        train(pipe, encoded, ONE_STEP, progress=False)
    with pytest.raises(TypeError, match="TrainConfig"):
        train(pipe, encoded, 1, progress=False)
    peft_pipe = add_adapter(load_pipeline(device="cpu"), rank=1, text_encoder=False)
    peft_pipe.fuse_lora()
    with pytest.raises(ValueError, match="merged"):
        train(peft_pipe, encoded, ONE_STEP, progress=False)


def test_data_of_the_wrong_type_is_named():
    with pytest.raises(TypeError, match="ShapesDataset"):
        finetune(load_pipeline(device="cpu"), [1, 2], ONE_STEP, progress=False)


def test_a_penalty_is_added_to_every_step_and_must_be_a_function(encoded):
    from lorakit.pipeline import LORA_TARGETS

    losses = {}
    for weight in (0.0, 1.0):
        pipe = load_pipeline(device="cpu")
        add_lora(pipe.unet, LORA_TARGETS, rank=1, alpha=1)
        losses[weight] = train(pipe, encoded, TrainConfig(steps=1, seed=0), progress=False,
                               penalty=lambda: torch.tensor(weight))
    assert losses[1.0][0] == pytest.approx(losses[0.0][0] + 1.0)  # B = 0 at step 0: the same data loss
    with pytest.raises(TypeError, match="penalty must be a function"):
        train(pipe, encoded, TrainConfig(steps=1), penalty=0.1, progress=False)


def test_finetune_calls_on_step_after_every_step(encoded):
    seen = []
    _, history = finetune(load_pipeline(device="cpu"), encoded, TrainConfig(steps=3), method="lora", rank=1,
                          progress=False, on_step=lambda step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == [1, 2, 3] and [l for _, l in seen] == history.loss
