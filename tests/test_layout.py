"""Pipeline folders in SD 1.5's layout: the same tokens and weights as transformers 5's own save, under SD 1.5's names."""

import shutil

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPTextModel, CLIPTokenizer

from lorakit.layout import TOKENIZER_FILES, is_sd15_layout, to_sd15_layout
from lorakit.paths import PIPELINE_DIR

PROMPTS = ["a small red circle", "a large sks striped triangle", "an unknown word"]


def test_the_shipped_pipeline_is_laid_out_as_sd15():
    assert sorted(p.name for p in (PIPELINE_DIR / "tokenizer").iterdir()) == sorted(TOKENIZER_FILES)
    with safe_open(str(PIPELINE_DIR / "text_encoder" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("text_model.encoder.") or k.startswith("text_model.embeddings.")
                   or k.startswith("text_model.final_layer_norm.") for k in f.keys())
    assert is_sd15_layout(PIPELINE_DIR)


def _saved_by_this_transformers(tmp_path):
    """A pipeline folder's tokenizer and text encoder as the installed transformers' save_pretrained writes them."""
    folder = tmp_path / "p"
    tokenizer = CLIPTokenizer.from_pretrained(PIPELINE_DIR / "tokenizer")
    model = CLIPTextModel.from_pretrained(PIPELINE_DIR / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    model.save_pretrained(folder / "text_encoder", safe_serialization=True)
    return folder, tokenizer, model


def test_rewriting_keeps_every_token_and_every_weight(tmp_path):
    folder, tokenizer, model = _saved_by_this_transformers(tmp_path)
    to_sd15_layout(folder)
    assert is_sd15_layout(folder)
    again = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    ids = tokenizer(PROMPTS, padding="max_length", return_tensors="pt").input_ids
    assert torch.equal(again(PROMPTS, padding="max_length", return_tensors="pt").input_ids, ids)
    assert again.model_max_length == tokenizer.model_max_length
    reloaded = CLIPTextModel.from_pretrained(folder / "text_encoder")
    with torch.no_grad():
        assert torch.equal(reloaded(ids)[0], model(ids)[0])


def test_rewriting_twice_changes_nothing(tmp_path):
    folder, _, _ = _saved_by_this_transformers(tmp_path)
    to_sd15_layout(folder)
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    to_sd15_layout(folder)
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before


def test_a_tokenizer_folder_without_vocabulary_is_refused(tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(PIPELINE_DIR / "text_encoder", folder / "text_encoder")
    (folder / "tokenizer").mkdir()
    shutil.copy(PIPELINE_DIR / "tokenizer" / "tokenizer_config.json", folder / "tokenizer")
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json nor vocab.json"):
        to_sd15_layout(folder)
    assert not is_sd15_layout(folder)
