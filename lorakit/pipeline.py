"""The tiny Stable Diffusion: the same diffusers/transformers parts as SD 1.5, configured small.

image (3x32x32) -VAE-> latent (4x8x8) -UNet with cross-attention <- CLIP text embeddings (16x64)
and back through the VAE decoder. `load_pipeline()` returns a stock `StableDiffusionPipeline`
from data/tiny-sd, so every diffusers/peft call on it works the same on a real checkpoint.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors import safe_open
from tqdm.auto import tqdm


class _TorchvisionNoticeFilter(logging.Filter):
    """Drop transformers' notice that torchvision is missing: its image processors are never used here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision" not in record.getMessage()


# The notice is logged while diffusers imports transformers: the filter is installed for these imports only.
_IMPORT_LOGGER, _NOTICE_FILTER = logging.getLogger("transformers.utils.import_utils"), _TorchvisionNoticeFilter()
_IMPORT_LOGGER.addFilter(_NOTICE_FILTER)
try:
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging
finally:
    _IMPORT_LOGGER.removeFilter(_NOTICE_FILTER)

from peft.tuners.tuners_utils import BaseTunerLayer

from lorakit.arguments import require_whole
from lorakit.data import IMAGE_SIZE, as_uint8, to_model_range, to_uint8, unknown_words
from lorakit.devices import device as pick_device
from lorakit.generations import DTYPE_KWARG
from lorakit.paths import base_pipeline_dir
from lorakit.seeds import seeded
from lorakit.tokenizer import MAX_LENGTH, build_tokenizer

TEXT_DIM = 64  # width of the text embeddings the UNet cross-attends to (SD 1.5: 768)
DEFAULT_STEPS = 10  # sampler steps for generate(): as accurate as 40 steps by notebook 01's rule (section 3)
DEFAULT_GUIDANCE = 4.0  # classifier-free guidance scale for generate()
# Images per pipeline call and per VAE decode in generate() at 32 px (fewer for a larger model, the same pixels):
# this CPU's per-image cost is lowest there, and grows for bigger batches (diffusers decodes a call's whole batch
# at once); benchmarks/generate.py.
GENERATE_CHUNK, DECODE_CHUNK = 128, 32
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections SD LoRAs target
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP's attention, kohya's "lora_te_" modules
_COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
_REBUILD_HINT = "rebuild it with `python -m lorakit pretrain` (about 15 minutes on a laptop CPU)"


def build_vae(channels: Sequence[int] = (32, 64, 64)) -> AutoencoderKL:
    """An untrained AutoencoderKL: 3x32x32 images to 4x8x8 latents (two downsamplings)."""
    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, width: int = TEXT_DIM, layers: int = 2) -> CLIPTextModel:
    """An untrained CLIP text transformer sized for the kit's vocabulary and 16-token prompts."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_unet(channels: Sequence[int] = (48, 96), layers_per_block: int = 1, cross_dim: int = TEXT_DIM) -> UNet2DConditionModel:
    """An untrained UNet2DConditionModel on 4x8x8 latents with cross-attention in every block."""
    n = len(channels)
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * n,
        up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def training_scheduler() -> DDPMScheduler:
    """SD 1.5's noise schedule (scaled-linear betas, 1000 steps, epsilon prediction).

    clip_sample=False: clipping the predicted x0 to [-1, 1] ruins latents (SD's configs set it too).
    """
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
        steps_offset=1,
    )


def assemble_pipeline(
    vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: UNet2DConditionModel
) -> StableDiffusionPipeline:
    """Put the parts together as a stock StableDiffusionPipeline with a fast DPM-Solver sampler."""
    sampler = DPMSolverMultistepScheduler.from_config(training_scheduler().config)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """An untrained tiny pipeline (random weights), e.g. for tests and the pre-training lesson."""
    with seeded(seed):
        tokenizer = build_tokenizer()
        return assemble_pipeline(build_vae(), build_text_encoder(tokenizer), tokenizer, build_unet())


class PipelineFolderError(ValueError):
    """A pipeline folder that exists but cannot be loaded; the message names the broken file."""


def check_pipeline_dir(path: Path) -> None:
    """Raise FileNotFoundError naming what is missing if `path` is not a complete pipeline folder."""
    if not path.is_dir():
        raise FileNotFoundError(f"no tiny Stable Diffusion pipeline at {path}; {_REBUILD_HINT}")
    missing = [p for p in ["model_index.json", *_COMPONENTS] if not (path / p).exists()]
    for part in ("vae", "text_encoder", "unet"):
        if (path / part).is_dir() and not any((path / part).glob("*.safetensors")):
            missing.append(f"{part}/*.safetensors")
    if missing:
        raise FileNotFoundError(f"the pipeline folder {path} is incomplete (missing: {', '.join(missing)}); {_REBUILD_HINT}")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' loading bars and load reports (a sub-second load), restoring them after."""
    was = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled())
    verbosity = transformers_logging.get_verbosity()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if was[0]:
            diffusers_logging.enable_progress_bar()
        if was[1]:
            transformers_logging.enable_progress_bar()


def load_pipeline(path: str | Path | None = None, device: str | torch.device | None = None) -> StableDiffusionPipeline:
    """A pipeline via `from_pretrained`, offline, float32, all weights frozen, sampling with DPM-Solver++: by default
    the shipped tiny model (data/tiny-sd), or the folder the LORAKIT_BASE setting names (a local stable-diffusion-v1-5)."""
    path = Path(path) if path is not None else base_pipeline_dir()
    check_pipeline_dir(path)
    dev = pick_device(device)  # an unavailable device is refused before loading
    with quiet_loading():
        try:
            pipe = StableDiffusionPipeline.from_pretrained(
                path,
                **{DTYPE_KWARG: torch.float32},  # weights are stored in float16 to keep data/ small
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=True,
            )
        except Exception as err:  # name the broken file instead of a loader's traceback
            raise PipelineFolderError(f"{_broken_file(path) or path} could not be loaded ({type(err).__name__}: "
                                      f"{str(err)[:200]}); {_REBUILD_HINT}, or `git checkout data` for the shipped one") from err
    if not isinstance(pipe.scheduler, DPMSolverMultistepScheduler):  # e.g. SD 1.5's PNDM: DEFAULT_STEPS is DPM-Solver's
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):  # frozen: training code unfreezes what it trains
        part.requires_grad_(False)
    return pipe.to(dev)


def image_size(pipe: StableDiffusionPipeline) -> int:
    """The side in pixels of the images a pipeline draws by default: 32 for the tiny model, 512 for SD 1.5."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _broken_file(path: Path) -> Path | None:
    """The first file of a pipeline folder that does not parse (a JSON config or a safetensors file), if any."""
    for f in sorted(path.rglob("*")):
        try:
            if f.suffix == ".json":
                json.loads(f.read_text())
            elif f.suffix == ".safetensors":
                with safe_open(str(f), framework="pt") as st:
                    for key in st.keys():
                        st.get_tensor(key)
        except Exception:  # any reader error means this file is the broken one
            return f
    return None


def _check_generate_args(prompts: list, steps: int, guidance: float, n_per_prompt: int, seed: int) -> None:
    """Refuse, with the fix, arguments the pipeline would turn into noise, NaN or a tokenizer traceback."""
    if not prompts:
        raise ValueError("no prompts given: pass a prompt or a non-empty list of prompts")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings, got {type(bad[0]).__name__} ({bad[0]!r})")
    require_whole("num_inference_steps", steps, hint="0 or fewer sampler steps return pure noise")
    require_whole("n_per_prompt", n_per_prompt)
    if not (isinstance(guidance, (int, float)) and math.isfinite(guidance)):
        raise ValueError(f"guidance_scale must be a finite number (1 = no guidance; the kit uses {DEFAULT_GUIDANCE}), "
                         f"got {guidance!r}")
    require_whole("seed", seed, minimum=0)


def generate(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str] | str,
    seed: int = 0,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    n_per_prompt: int = 1,
    merge: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Images for prompts as uint8 (B, 3, H, W) (32 px on the tiny model); image i uses seed + i, whatever the batch
    or device.

    Warns about words the tiny model never saw in training (they are spelled out letter by letter).
    Extra keyword arguments go to the pipeline call (e.g. cross_attention_kwargs). With `merge` (the
    default), active peft adapters are merged into the weights while sampling (`merged_adapters`), as
    `pipe.fuse_lora()` merges them: the same images up to float rounding, faster; `merge=False` runs them
    as separate layers, as a plain `pipe(...)` call does (e.g. to time that).
    """
    return generate_groups(pipe, [(prompts, seed, n_per_prompt)], num_inference_steps, guidance_scale, merge,
                           **kwargs)[0]


def generate_groups(
    pipe: StableDiffusionPipeline,
    groups: Sequence[tuple[Sequence[str] | str, int, int]],
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float = DEFAULT_GUIDANCE,
    merge: bool = True,
    **kwargs,
) -> list[torch.Tensor]:
    """Several `generate` calls in one batch: groups of (prompts, seed, n_per_prompt), one image tensor per group.

    Each group's images are those `generate(pipe, prompts, seed, n_per_prompt=...)` makes (the same
    seeds), up to float rounding; one batch of many images costs less per image than several small ones.
    """
    prompts, seeds, sizes = [], [], []
    for group_prompts, seed, n_per_prompt in groups:
        group_prompts = [group_prompts] if isinstance(group_prompts, str) else list(group_prompts)
        _check_generate_args(group_prompts, num_inference_steps, guidance_scale, n_per_prompt, seed)
        each = [p for p in group_prompts for _ in range(n_per_prompt)]
        prompts += each
        seeds += [seed + i for i in range(len(each))]
        sizes.append(len(each))
    if not prompts:
        raise ValueError("no groups given: pass a list of (prompts, seed, n_per_prompt)")
    unknown = sorted({w for p in prompts for w in unknown_words(p)}) if pipe.tokenizer.model_max_length == MAX_LENGTH else []
    if unknown:  # the kit's own tokenizer (16 tokens) spells unknown words letter by letter; CLIP's knows them
        warnings.warn(f"words the tiny model has never seen: {unknown}; it can only guess at them", stacklevel=3)
    return list(_generate_each(pipe, prompts, seeds, num_inference_steps, guidance_scale, merge, **kwargs).split(sizes))


def _generate_each(pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], num_inference_steps: int,
                   guidance_scale: float, merge: bool, **kwargs) -> torch.Tensor:
    """One image per (prompt, seed), as uint8 (B, 3, H, W): pipeline calls of GENERATE_CHUNK images, decoded in
    DECODE_CHUNKs (counted in 32 px images: a 512 px model draws and decodes one at a time). Each image's noise
    comes from its own seed, so the chunks change nothing but float rounding."""
    accepted = inspect.signature(pipe.__call__).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:  # diffusers would drop them silently
        raise TypeError(f"generate() got keyword(s) {unknown} that neither it nor the pipeline takes (the pipeline "
                        "would ignore them silently); e.g. num_inference_steps=, guidance_scale=, cross_attention_kwargs=")
    batched = sorted(k for k in kwargs if k in ("latents", "prompt_embeds", "negative_prompt_embeds", "output_type"))
    if batched:
        raise TypeError(f"generate() makes each image from its prompt and seed, so it does not take {batched}; "
                        "call the pipeline itself (pipe(...)) to pass them")
    # Noise is drawn on the CPU whatever the device, so a seed gives the same image on a laptop and a GPU.
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    area = (IMAGE_SIZE / image_size(pipe)) ** 2  # a 512 px model: 1/256 of the 32 px batch's images, the same pixels
    per_call, per_decode = max(1, int(GENERATE_CHUNK * area)), max(1, int(DECODE_CHUNK * area))
    starts = range(0, len(prompts), per_call)
    images = []
    # A call-time LoRA scale (cross_attention_kwargs) is applied by diffusers to unmerged layers only.
    merged = merged_adapters(pipe) if merge and "cross_attention_kwargs" not in kwargs else nullcontext()
    with torch.no_grad(), merged:
        # a bar only for a call long enough to wait for (4 chunks: about 12 s here); loops have their own
        for i in tqdm(starts, desc=f"{len(prompts)} images", leave=False, disable=len(starts) < 4):
            latents = pipe(
                prompt=prompts[i : i + per_call],
                generator=generators[i : i + per_call],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                output_type="latent",
                **kwargs,
            ).images  # (b, 4, h, w): 8 x 8 on the tiny model
            for part in latents.split(per_decode):
                # what pipe(..., output_type="pt") does after the last step
                decoded = pipe.vae.decode(part / pipe.vae.config.scaling_factor, return_dict=False)[0]  # in [-1, 1]
                out = pipe.image_processor.postprocess(decoded, output_type="pt", do_denormalize=[True] * len(part))
                images.append(as_uint8(out))  # (b, 3, H, W)
    return torch.cat(images)


@contextmanager
def merged_adapters(pipe: StableDiffusionPipeline) -> Iterator[None]:
    """Inside the block, every active peft adapter (LoRA, DoRA, LoHa, LoKr) is merged into its base weights, as
    `pipe.fuse_lora()` merges it: the same network up to float rounding, at the base model's cost (an unmerged
    adapter adds an extra small matmul per layer: about 1.2x the sampling time on this CPU,
    `benchmarks/generate.py`). Leaving restores the exact base weights; adapters already merged by the user, or
    switched off (`pipe.disable_lora()`), are left as they are."""
    saved: list[tuple[BaseTunerLayer, torch.Tensor]] = []  # (layer, its base weight before merging)
    try:
        with torch.no_grad():
            for model in (pipe.unet, pipe.text_encoder):
                for layer in model.modules():
                    if isinstance(layer, BaseTunerLayer) and layer.active_adapters and not (
                            layer.merged or layer.disable_adapters):
                        saved.append((layer, layer.get_base_layer().weight.detach().clone()))
                        layer.merge()
        yield
    finally:
        with torch.no_grad():
            for layer, weight in saved:
                layer.get_base_layer().weight.copy_(weight)
                layer.merged_adapters = []


@torch.no_grad()
def vae_round_trip(images: torch.Tensor, vae: torch.nn.Module, batch_size: int = 500) -> torch.Tensor:
    """Images encoded and decoded by a pipeline's VAE (latent mean): uint8 (B, 3, H, W), as generated images look."""
    dev = next(vae.parameters()).device
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="VAE round trips", leave=False):
        x = to_model_range(images[i : i + batch_size]).to(dev)
        out.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mean).sample.cpu()))
    return torch.cat(out)


def parameter_counts(pipe: StableDiffusionPipeline) -> dict[str, int]:
    """Parameters per trainable component of a pipeline."""
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("vae", "text_encoder", "unet")}
