"""Run by tests/test_generations.py under either library generation's Python (.venv or .venv-compat).

    python tests/generations_worker.py versions OUT.json
    python tests/generations_worker.py images OUT.pt          the shipped pipeline's images for fixed prompts and seeds
    python tests/generations_worker.py write-loras DIR        a seeded adapter (UNet, convolutions, text encoder) in both formats
    python tests/generations_worker.py lora-images DIR OUT.pt each LoRA file in DIR loaded into the shipped pipeline, its images
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

PROMPTS = ["a small red circle", "a large blue square", "a small green triangle", "a large orange circle"]


def draw(pipe) -> torch.Tensor:
    """Four images per prompt at 10 sampler steps: uint8 (16, 3, 32, 32)."""
    from lorakit.pipeline import generate

    return generate(pipe, PROMPTS, seed=7, n_per_prompt=4, num_inference_steps=10)


def versions(out: Path) -> None:
    import diffusers
    import peft
    import transformers

    out.write_text(json.dumps({"transformers": transformers.__version__, "diffusers": diffusers.__version__,
                               "peft": peft.__version__, "torch": torch.__version__}))


def images(out: Path) -> None:
    from lorakit.pipeline import load_pipeline

    torch.save(draw(load_pipeline()), out)


def write_loras(folder: Path) -> None:
    from lorakit.adapters import adapter_alphas, adapter_state, add_adapter
    from lorakit.formats import save_lora
    from lorakit.pipeline import load_pipeline

    pipe = add_adapter(load_pipeline(), rank=4, alpha=8, conv=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B = 0 at init would make every file draw the base model's images
        for part in (pipe.unet, pipe.text_encoder):
            for name, p in part.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    state, alphas = adapter_state(pipe), adapter_alphas(pipe)
    for fmt in ("diffusers", "kohya"):
        save_lora(state, folder / f"{fmt}.safetensors", format=fmt, alpha=alphas)


def lora_images(folder: Path, out: Path) -> None:
    from lorakit.adapters import load_adapter
    from lorakit.pipeline import load_pipeline

    drawn = {}
    for path in sorted(folder.glob("*.safetensors")):
        pipe = load_adapter(load_pipeline(), path, "test")
        drawn[path.stem] = draw(pipe)
    torch.save(drawn, out)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"versions": versions, "images": images, "write-loras": write_loras, "lora-images": lora_images}[command](*map(Path, args))
