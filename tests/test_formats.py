import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.concepts import adapter_path
from lorakit.data import make_dataset
from lorakit.finetune import train
from lorakit.formats import LoraFileError, from_kohya, inspect_lora, load_lora, save_lora, to_kohya
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


def test_from_scratch_lora_through_peft_kohya_and_back_gives_identical_images(tmp_path):
    pipe = load_pipeline(device="cpu")
    torch.manual_seed(0)
    add_lora(pipe.unet, LORA_TARGETS, rank=2, alpha=6)  # alpha != rank: the trap
    train(pipe, make_dataset(16, seed=0, include=["orange"]), 3, lr=1e-2, batch_size=8, progress=False)
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
    other = {k: torch.zeros(v.shape[0], v.shape[1] * 2) if "to_k.lora.down" in k else v for k, v in state.items()}
    other["unet.mid_block.attentions.9.proj.lora.down.weight"] = torch.zeros(4, 8)
    other["unet.mid_block.attentions.9.proj.lora.up.weight"] = torch.zeros(8, 4)
    path = tmp_path / "other.safetensors"
    save_file(other, str(path))
    problems = inspect_lora(path, pipe).problems
    assert any("no such layer" in p and "attentions.9" in p for p in problems)
    assert any("shape mismatch" in p and "expected A (4, " in p and "found A (4, " in p for p in problems)
    assert inspect_lora(adapter_path("orange"), pipe).problems == []
