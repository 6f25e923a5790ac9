"""SD 1.5's exact architecture without its weights: the published component configs, random weights.

`data/sd15/` holds stable-diffusion-v1-5's component configs (UNet, VAE, CLIP text encoder,
scheduler): facts about shapes, not weights, so nothing is downloaded. `sd15_pipeline()` builds
the pipeline from them with random weights. It draws noise, but every LoRA function of the kit runs
on it exactly as on the real checkpoint, and its parameter counts, file sizes, memory and seconds
per step are SD 1.5's (notebook 09, `benchmarks/sd15_cost.py`). `load_pipeline(folder)` loads a real
SD 1.5 folder instead (notebook 09 reads it from the LORAKIT_BASE setting: `lorakit.paths.base_checkpoint_dir`).
"""

from __future__ import annotations

from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from lorakit.paths import DATA_DIR
from lorakit.seeds import seeded
from lorakit.tokenizer import build_tokenizer

SD15_DIR = DATA_DIR / "sd15"
# stable-diffusion-v1-5's parameter counts, as its model card and every loader report them
PUBLISHED_PARAMETERS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
SD15_TOKENS = 77  # SD 1.5's prompt length (the tiny model's: 16)


def sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """SD 1.5's pipeline from its published configs with random weights (float32, frozen, CPU; about 4.3 GB).

    The tokenizer is the kit's (the same CLIP BPE, padded to SD 1.5's 77 tokens): every id it makes
    is a valid row of SD 1.5's 49,408-token embedding.
    """
    with seeded(seed):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_DIR / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15_DIR / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_DIR / "text_encoder"))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(max_length=SD15_TOKENS), unet=unet,
        scheduler=PNDMScheduler.from_config(PNDMScheduler.load_config(SD15_DIR / "scheduler")),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):  # frozen, as load_pipeline leaves the tiny one
        part.requires_grad_(False).eval()
    return pipe


def attention_lora_parameters(rank: int, channels: tuple[int, ...] = (320, 640, 1280), blocks: tuple[int, ...] = (5, 5, 6),
                              text_dim: int = 768) -> int:
    """A UNet attention LoRA's parameter count (to_q, to_k, to_v, to_out.0) from SD 1.5's published shapes.

    SD 1.5 has 16 transformer blocks: at 320 channels 2 down + 3 up, at 640 the same, at 1280 2 down,
    the middle one and 3 up. Each has self-attention (four C x C projections) and cross-attention
    (q and out C x C, k and v text_dim -> C). A rank-r LoRA on an (out, in) layer holds r (in + out).
    """
    per_block = [4 * rank * (c + c)  # self-attention: q, k, v, out, each C -> C
                 + 2 * rank * (c + c) + 2 * rank * (text_dim + c)  # cross-attention: q, out C -> C; k, v text -> C
                 for c in channels]
    return sum(n * p for n, p in zip(blocks, per_block))
