"""LyCORIS files made by LyCORIS's own code (`lycoris-lora`) for the tiny pipeline: named, inspected, loaded or refused.

Each file is LyCORIS's network saved with kohya's prefix ("lora_unet_"), as kohya's sd-scripts with
LyCORIS write them for SD 1.5. LoRA and LoCon load through stock diffusers with the images LyCORIS's
own application draws; LoHa, LoKr and DoRA are refused with a message that says why and what to do.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.adapters import load_adapter
from lorakit.formats import LoraFileError, inspect_lora, load_lora
from lorakit.pipeline import generate, load_pipeline

lycoris = pytest.importorskip("lycoris", reason="lycoris-lora is a dev dependency: `make install` installs it")
pytestmark = pytest.mark.slow

PROMPTS = ["a small red circle", "a large blue square"]
NETWORKS = {  # name: (LyCORIS algo, also on the ResNet convolutions, extra arguments)
    "LoRA": ("lora", False, {}),
    "LoCon": ("lora", True, {}),
    "LoHa": ("loha", False, {}),
    "LoKr": ("lokr", False, {}),
    "DoRA": ("lora", False, {"dora_wd": True}),
}


def draw(pipe) -> torch.Tensor:
    return generate(pipe, PROMPTS, seed=3, n_per_prompt=2, num_inference_steps=5)


def lycoris_file(name: str, folder) -> tuple:
    """LyCORIS's network on the shipped UNet (rank 4, alpha 2, random up-factors), saved with kohya's prefix; its images."""
    from lycoris import LycorisNetwork, create_lycoris

    algo, conv, extra = NETWORKS[name]
    logging.getLogger("LyCORIS").setLevel(logging.ERROR)
    pipe = load_pipeline()
    LycorisNetwork.apply_preset({"target_module": ["Attention"] + (["ResnetBlock2D"] if conv else [])})
    torch.manual_seed(0)
    net = create_lycoris(pipe.unet, 1.0, linear_dim=4, linear_alpha=2, conv_dim=4 if conv else 0, conv_alpha=2,
                         algo=algo, **extra)
    net.apply_to()
    with torch.no_grad():  # the up-side factors start at zero: give the network an effect to compare
        for n, p in net.named_parameters():
            if any(t in n for t in ("lora_up", "hada_w1_a", "hada_w2_a", "lokr_w1", "lokr_w2")):
                p.normal_(0, 0.05)
    path = folder / f"{name}.safetensors"
    net.save_weights(str(path), torch.float32, {})
    state = {"lora_unet_" + k.removeprefix("lycoris_"): v for k, v in load_file(str(path)).items()}
    save_file(state, str(path))
    return path, draw(pipe), net


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lycoris")
    return {name: lycoris_file(name, folder) for name in NETWORKS}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_inspect_lora_names_the_algorithm_its_ranks_and_scales(files, name):
    path, _, net = files[name]
    info = inspect_lora(path, load_pipeline())
    assert info.algorithm == name and info.problems == []
    assert info.alpha_from == ".alpha keys"
    if name != "LoKr":
        assert set(info.ranks.values()) == {4} and set(info.alphas.values()) == {2.0} and set(info.scales.values()) == {0.5}
    else:  # where both Kronecker factors are full matrices LyCORIS writes alpha = dim and scales by 1
        assert set(info.scales.values()) <= {0.5, 1.0} and set(info.alphas.values()) <= {2.0, 4.0}
    assert info.n_params == sum(p.numel() for p in net.parameters())
    assert info.diffusers_loads == (name in ("LoRA", "LoCon"))
    assert name in info.report() and ("stock diffusers loads it" in info.report()) == info.diffusers_loads
    if name == "LoCon":
        assert any(".resnets." in m for m in info.ranks)


@pytest.mark.parametrize("name", ["LoRA", "LoCon"])
def test_what_diffusers_loads_draws_what_lycoris_draws(files, name):
    path, lycoris_images, _ = files[name]
    base = draw(load_pipeline())
    loaded = draw(load_adapter(load_pipeline(), path, "lyco"))
    assert (loaded.int() - lycoris_images.int()).abs().max() <= 1
    assert (loaded.float() - base.float()).abs().mean() > 0.5, "the network should change the images"
    assert set(load_lora(path)) >= {k for k in load_file(str(path)) if k.endswith(".lora_down.weight")}


@pytest.mark.parametrize("name, why", [("LoHa", "cannot load LoHa"), ("LoKr", "cannot load LoKr"),
                                       ("DoRA", "without its dora_scale")])
def test_what_diffusers_cannot_load_is_refused_with_the_reason(files, name, why):
    path, _, _ = files[name]
    pipe = load_pipeline()
    with pytest.raises(LoraFileError, match=why) as err:
        load_adapter(pipe, path, "lyco")
    assert "create_lycoris_from_weights" in str(err.value)
    assert not getattr(pipe.unet, "peft_config", None), "a refused file adds nothing to the pipeline"
    with pytest.raises(LoraFileError, match=why):
        load_lora(path)
