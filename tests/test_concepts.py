"""The shipped concept adapters: five training runs of one recipe per concept, named and checked."""

import pytest
import torch
from safetensors.torch import load_file

from lorakit.concepts import CONCEPTS, SEEDS, adapter_path, train_adapters


@pytest.mark.parametrize("concept", CONCEPTS)
def test_every_concept_ships_its_training_runs_on_the_same_layers(concept):
    runs = {s: load_file(adapter_path(concept, s)) for s in SEEDS}
    assert adapter_path(concept) == adapter_path(concept, 0) and adapter_path(concept).name == f"{concept}.safetensors"
    assert len({frozenset(r) for r in runs.values()}) == 1  # one recipe: the same keys in every run
    key = next(k for k in runs[0] if k.endswith(("up.weight", "lora_B.weight")))  # B: zero at init, so it differs only by training
    assert all(not torch.equal(runs[0][key], runs[s][key]) for s in SEEDS[1:])  # and different runs


def test_unknown_concepts_and_seeds_are_refused_with_what_exists():
    with pytest.raises(ValueError, match="seeds"):
        adapter_path("orange", 7)
    with pytest.raises(ValueError, match="ships"):
        adapter_path("purple")


@pytest.mark.parametrize("seeds", [[1, 1], [], [-1]])
def test_bad_seeds_are_refused_before_anything_is_written(tmp_path, seeds):
    out = tmp_path / "adapters"
    with pytest.raises(ValueError, match="seeds"):
        train_adapters(out, steps=1, seeds=seeds)
    assert not out.exists()
