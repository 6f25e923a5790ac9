import pytest
import torch
from diffusers import StableDiffusionPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from lorakit.concepts import adapter_path
from lorakit.data import make_dataset
from lorakit.diffusion import TrainConfig
from lorakit.finetune import train
from lorakit.formats import LoraFileError, from_kohya, inspect_lora, load_lora, peft_layout, save_lora, to_kohya
from lorakit.lora import add_lora, peft_metadata, to_peft_state_dict
from lorakit.pipeline import LORA_TARGETS, generate, load_pipeline

PROMPT = "a large orange circle"


def _images(pipe):
    return generate(pipe, PROMPT, seed=0, n_per_prompt=2, num_inference_steps=4)


@pytest.fixture(scope="module")
def shipped():
    """The shipped orange adapter (alpha 8, rank 4) loaded by stock diffusers, and its images."""
    pipe = load_pipeline(device="cpu")
    pipe.load_lora_weights(adapter_path("orange"))
    return load_file(adapter_path("orange")), _images(pipe)


def test_kohya_round_trip_is_exact_and_keeps_alpha(shipped):
    state, _ = shipped
    kohya = to_kohya(state, 8.0)
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {8.0}
    peft_state, alphas = from_kohya(kohya)
    assert set(alphas.values()) == {8.0} and len(alphas) == 64
    again = to_kohya(peft_state, alphas)
    assert again.keys() == kohya.keys() and all(torch.equal(again[k], kohya[k]) for k in kohya)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_saved_files_reload_identically_in_stock_diffusers_and_through_load_lora(shipped, tmp_path, fmt):
    state, expected = shipped
    path = save_lora(to_kohya(state, 8.0), tmp_path / f"orange-{fmt}.safetensors", format=fmt)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically, nothing left behind
    for source in (path, load_lora(path)):  # the file itself, and the dict load_lora returns
        pipe = load_pipeline(device="cpu")
        pipe.load_lora_weights(source)
        assert torch.equal(_images(pipe), expected)
    info = inspect_lora(path)
    assert info.format == fmt and set(info.ranks.values()) == {4} and set(info.alphas.values()) == {8.0}
    assert set(info.scales.values()) == {2.0} and info.n_params == 37_248


@pytest.mark.slow
def test_from_scratch_lora_through_peft_kohya_and_back_gives_identical_images(tmp_path):
    pipe = load_pipeline(device="cpu")
    torch.manual_seed(0)
    add_lora(pipe.unet, LORA_TARGETS, rank=2, alpha=6)  # alpha != rank: the trap
    train(pipe, make_dataset(16, seed=0, include=["orange"]), TrainConfig(steps=3, lr=1e-2, batch_size=8), progress=False)
    expected = _images(pipe)
    state = {f"unet.{k}": v for k, v in to_peft_state_dict(pipe.unet).items()}
    assert peft_metadata(pipe.unet)["lora_alpha"] == 6
    kohya_path = save_lora(state, tmp_path / "a.safetensors", format="kohya", alpha=6.0)
    diffusers_path = save_lora(load_lora(kohya_path), tmp_path / "b.safetensors", format="diffusers")
    for path in (kohya_path, diffusers_path):
        fresh = load_pipeline(device="cpu")
        fresh.load_lora_weights(path)
        assert (_images(fresh).int() - expected.int()).abs().max() <= 1


def test_a_file_without_alpha_is_reported_not_guessed_silently(shipped, tmp_path):
    state, _ = shipped
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))  # the same weights without the metadata that says alpha = 8
    info = inspect_lora(bare)
    assert info.alpha_from.startswith("missing") and set(info.scales.values()) == {1.0}
    with pytest.raises(ValueError, match="alpha"):
        save_lora(state, tmp_path / "x.safetensors")


def test_bad_files_give_clear_errors_and_change_nothing(shipped, tmp_path):
    good = adapter_path("orange").read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(LoraFileError, match="truncated or corrupted"):
        load_lora(truncated)
    assert truncated.read_bytes() == good[: len(good) // 2]  # a failed load writes nothing
    not_lora = tmp_path / "weights.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(not_lora))
    with pytest.raises(LoraFileError, match="no LoRA weights"):
        inspect_lora(not_lora)
    with pytest.raises(FileNotFoundError, match="no LoRA file"):
        load_lora(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="format must be"):
        save_lora(shipped[0], tmp_path / "y.safetensors", format="ckpt", alpha=8.0)


def test_a_lora_for_another_model_is_reported_with_shapes(shipped, pipe, tmp_path):
    state, _ = shipped
    other = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if k.endswith("to_k.lora_A.weight") else v for k, v in state.items()}
    other["unet.mid_block.attentions.9.proj.lora.down.weight"] = torch.zeros(4, 8)
    other["unet.mid_block.attentions.9.proj.lora.up.weight"] = torch.zeros(8, 4)
    path = tmp_path / "other.safetensors"
    save_file(other, str(path))
    problems = inspect_lora(path, pipe).problems
    assert any("no such layer" in p and "attentions.9" in p for p in problems)
    assert any("shape mismatch" in p and "expected A (4, " in p and "found A (4, " in p for p in problems)
    assert inspect_lora(adapter_path("orange"), pipe).problems == []


# -- files as learners meet them: broken, pickled, in folders, from peft, with conv layers --------


def _save(state, path, metadata=None):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    return path


def test_nan_weights_and_nan_alpha_are_reported_not_drawn_black(shipped, tmp_path):
    state, _ = shipped
    kohya = to_kohya(state, 8.0)
    first = next(k for k in kohya if k.endswith("lora_up.weight"))
    for name, broken in (("nan_weights", {**kohya, first: torch.full_like(kohya[first], float("nan"))}),
                         ("nan_alpha", {k: torch.tensor(float("nan")) if k.endswith(".alpha") else v
                                        for k, v in kohya.items()})):
        path = _save(broken, tmp_path / f"{name}.safetensors")
        with pytest.raises(LoraFileError, match="NaN|alpha is nan"):
            load_lora(path)
        assert any("NaN" in p or "alpha is nan" in p for p in inspect_lora(path).problems)


@pytest.mark.parametrize("alpha", [float("nan"), 0.0, -8.0, float("inf")])
def test_save_lora_refuses_an_impossible_alpha_and_writes_nothing(shipped, tmp_path, alpha):
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        save_lora(shipped[0], tmp_path / "x.safetensors", alpha=alpha)
    assert list(tmp_path.iterdir()) == []


def test_save_lora_onto_a_folder_names_the_users_path(shipped, tmp_path):
    with pytest.raises((IsADirectoryError, FileExistsError), match=f"{tmp_path} is a folder; give a file path"):
        save_lora(shipped[0], tmp_path, alpha=8.0)


def test_an_integer_alpha_as_diffusers_converter_writes_it_is_read(shipped, tmp_path):
    kohya = to_kohya(shipped[0], 8.0)
    path = _save({k: v.long() if k.endswith(".alpha") else v for k, v in kohya.items()}, tmp_path / "int.safetensors")
    assert set(inspect_lora(path).alphas.values()) == {8.0}
    assert all(v.dtype == torch.float32 for k, v in load_lora(path).items() if k.endswith(".alpha"))


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".safetensors"])
def test_a_pickle_is_refused_for_safety_not_called_corrupted(shipped, tmp_path, suffix):
    path = tmp_path / f"lora{suffix}"
    torch.save(shipped[0], path)  # what .ckpt/.bin LoRAs are: pickles (even when misnamed)
    with pytest.raises(LoraFileError, match="is a pickle.*does not unpickle"):
        load_lora(path)


@pytest.mark.slow
def test_a_diffusers_lora_folder_is_accepted(shipped, tmp_path):
    pipe = load_pipeline(device="cpu")
    pipe.load_lora_weights(adapter_path("orange"))
    from lorakit.adapters import adapter_state
    state = adapter_state(pipe, "default_0")
    part = {p: {k.removeprefix(f"{p}."): v for k, v in state.items() if k.startswith(f"{p}.")} for p in ("unet", "text_encoder")}
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=part["unet"], text_encoder_lora_layers=part["text_encoder"])
    assert inspect_lora(tmp_path).path.name == "pytorch_lora_weights.safetensors"
    fresh = load_pipeline(device="cpu")
    fresh.load_lora_weights(load_lora(tmp_path))
    assert torch.equal(_images(fresh), _images(load_pipeline_with(tmp_path / "pytorch_lora_weights.safetensors")))


def load_pipeline_with(path):
    pipe = load_pipeline(device="cpu")
    pipe.load_lora_weights(path)
    return pipe


@pytest.mark.slow
def test_a_peft_adapter_model_file_is_accepted_with_its_alpha(shipped, tmp_path):
    state, _ = shipped
    unet_part = {k: v for k, v in state.items() if k.startswith("unet.")}
    peft_model = get_peft_model(load_pipeline(device="cpu").unet,
                                LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS)))
    loaded = set_peft_model_state_dict(peft_model, {f"base_model.model.{k}": v
                                                    for k, v in peft_layout(unet_part)["unet"].items()})
    assert not loaded.unexpected_keys
    peft_model.save_pretrained(tmp_path / "peft")  # adapter_model.safetensors + adapter_config.json
    info = inspect_lora(tmp_path / "peft")
    assert info.path.name == "adapter_model.safetensors" and set(info.alphas.values()) == {8.0}
    assert info.alpha_from == "file metadata" and info.problems == []
    reference = _save(unet_part, tmp_path / "unet_only.safetensors")
    expected = load_lora(reference)
    assert set(load_lora(tmp_path / "peft" / "adapter_model.safetensors")) == set(expected)
    fresh = load_pipeline(device="cpu")
    fresh.load_lora_weights(load_lora(tmp_path / "peft"))
    ref_pipe = load_pipeline(device="cpu")
    ref_pipe.load_lora_weights(save_lora(unet_part, tmp_path / "with_alpha.safetensors", alpha=8.0))
    assert torch.equal(_images(fresh), _images(ref_pipe))


def test_loading_a_lora_for_another_model_lists_the_first_mismatches(shipped, tmp_path):
    from lorakit.adapters import load_adapter

    state, _ = shipped
    def is_a(key):
        return key.endswith(("down.weight", "lora_A.weight"))

    # rank 8 and 3 inputs too many: a LoRA made for a wider model
    wider = {k: torch.zeros(8, v.shape[1] + 3) if is_a(k) else torch.zeros(v.shape[0], 8) for k, v in state.items()}
    path = _save(wider, tmp_path / "other.safetensors", metadata={"format": "pt"})
    pipe = load_pipeline(device="cpu")
    with pytest.raises(LoraFileError, match=r"shape mismatch, expected A \(8, \d+\) .* found A \(8, \d+\)"):
        load_adapter(pipe, path, "other")
    with pytest.raises(LoraFileError, match="shape mismatch"):
        load_lora(path, pipe)
    assert not getattr(pipe.unet, "peft_config", None)  # nothing was loaded


def test_conv_layers_are_checked_as_convolutions_and_targets_name_modules(tmp_path):
    from lorakit.adapters import add_adapter, adapter_state

    targets = ["to_q", "to_out.0", "proj_in", "proj_out", "conv1", "ff.net.0.proj", "ff.net.2"]
    pipe = add_adapter(load_pipeline(device="cpu"), rank=2, targets=targets)
    path = save_lora(adapter_state(pipe), tmp_path / "locon.safetensors", format="kohya", alpha=2.0)
    info = inspect_lora(path, load_pipeline(device="cpu"))
    assert info.problems == []
    assert set(targets) <= set(info.targets) and not {"2", "proj", "conv", "0"} & set(info.targets)
    kohya = load_file(path)
    conv_key = next(k for k in kohya if "resnets_0_conv1.lora_down" in k)
    kohya[conv_key] = torch.zeros(2, kohya[conv_key].shape[1] + 1, 3, 3)
    problems = inspect_lora(_save(kohya, tmp_path / "bad.safetensors"), load_pipeline(device="cpu")).problems
    assert len(problems) == 1 and "conv1: shape mismatch, expected A (2, " in problems[0] and ", 3, 3)" in problems[0]


# -- property: a reader either reads a file right or says what is wrong, never more ---------------


_MUTATIONS = ("truncate", "drop_keys", "dtype", "nan", "rename", "alpha_shape", "extra_key", "none")


def _mutated_bytes(state: dict, kind: str, data) -> bytes:
    import safetensors.torch

    keys = sorted(state)
    state = dict(state)
    if kind == "drop_keys":
        drop = data.draw(st.sets(st.sampled_from(keys), min_size=1, max_size=len(keys)))
        state = {k: v for k, v in state.items() if k not in drop}
    elif kind == "dtype":
        key = data.draw(st.sampled_from(keys))
        dtype = data.draw(st.sampled_from([torch.int32, torch.int8, torch.bool, torch.float16, torch.bfloat16,
                                           torch.float64, torch.uint8]))
        state[key] = state[key].to(dtype)
    elif kind == "nan":
        key = data.draw(st.sampled_from(keys))
        state[key] = state[key].clone().fill_(data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf")])))
    elif kind == "rename":
        key = data.draw(st.sampled_from(keys))
        state[data.draw(st.text("abcdefghijklmnopqrstuvwxyz_.0123456789", min_size=1, max_size=40))] = state.pop(key)
    elif kind == "alpha_shape":
        alphas = [k for k in keys if k.endswith(".alpha")] or keys
        state[data.draw(st.sampled_from(alphas))] = torch.ones(data.draw(st.integers(2, 4)))
    elif kind == "extra_key":
        state[data.draw(st.sampled_from(keys)) + data.draw(st.sampled_from(["", ".x", "_extra"]))] = torch.zeros(3, 2)
    raw = safetensors.torch.save({k: v.contiguous() for k, v in state.items()}) if state else b""
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    return raw


@pytest.fixture(scope="module")
def reader_inputs(shipped):
    return {"diffusers": shipped[0], "kohya": to_kohya(shipped[0], 8.0)}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_readers_read_right_or_raise_their_own_error_and_never_change_the_pipeline(reader_inputs, pipe, data,
                                                                                   tmp_path_factory):
    layout = data.draw(st.sampled_from(sorted(reader_inputs)))
    kind = data.draw(st.sampled_from(_MUTATIONS))
    path = tmp_path_factory.mktemp("prop") / "lora.safetensors"
    path.write_bytes(_mutated_bytes(reader_inputs[layout], kind, data))
    before = {k: v.clone() for part in (pipe.unet, pipe.text_encoder) for k, v in part.state_dict().items()}
    for read in (load_lora, inspect_lora, lambda p: inspect_lora(p, pipe), lambda p: load_lora(p, pipe)):
        try:
            result = read(path)
        except LoraFileError as err:
            assert str(err)  # the kit's own error, with a message
            continue
        if isinstance(result, dict):  # a kohya-layout dict of finite float tensors, every layer whole
            assert result and all(k.startswith(("lora_unet_", "lora_te")) for k in result)
            assert all(v.is_floating_point() and torch.isfinite(v).all() for v in result.values())
    after = {k: v for part in (pipe.unet, pipe.text_encoder) for k, v in part.state_dict().items()}
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_saving_never_replaces_an_existing_file_without_overwrite(shipped, tmp_path):
    from lorakit.adapters import add_adapter, save_adapter

    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"someone's LoRA")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_lora(shipped[0], mine, alpha=8.0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapter(add_adapter(load_pipeline(device="cpu"), rank=1), mine)
    assert mine.read_bytes() == b"someone's LoRA"
    save_lora(shipped[0], mine, alpha=8.0, overwrite=True)
    assert inspect_lora(mine).problems == []


def test_load_adapter_names_a_clash_and_a_missing_name(tmp_path):
    from lorakit.adapters import load_adapter

    pipe = load_adapter(load_pipeline(device="cpu"), adapter_path("orange"), "orange")
    with pytest.raises(ValueError, match="already has an adapter named 'orange'"):
        load_adapter(pipe, adapter_path("striped"), "orange")
    with pytest.raises(ValueError, match="non-empty string"):
        load_adapter(pipe, adapter_path("striped"), None)
