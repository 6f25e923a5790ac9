"""The diffusion training primitives every training loop shares, model-agnostic.

Pre-training (`lorakit.pretrain`), fine-tuning (`lorakit.finetune`, and through it DreamBooth) and
the control adapters (`lorakit.control`) all train a denoiser the same way: images encoded once by
the frozen VAE, a noised batch drawn from one generator, the noise-prediction (epsilon) loss, and
an optimizer step that stops on a NaN loss, with the settings of a run in one `TrainConfig`. This
module holds those pieces and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lorakit.arguments import require_whole
from lorakit.data import IMAGE_SIZE, ShapesDataset, resize_images, to_model_range
from lorakit.pipeline import image_size, training_scheduler


@dataclass
class EncodedData:
    """A dataset pushed through the frozen VAE (and, unless it trains, the text encoder) once."""

    latent_mean: torch.Tensor  # (N, 4, h, w), unscaled: 8 x 8 on the tiny model, 64 x 64 on SD 1.5
    latent_std: torch.Tensor  # (N, 4, h, w)
    ids: torch.Tensor  # (N, 16) token ids of each caption
    empty_ids: torch.Tensor  # (1, 16) the empty prompt's, for caption dropout
    text: torch.Tensor | None = None  # (N, 16, 64) text-encoder outputs for each caption
    empty_text: torch.Tensor | None = None  # (1, 16, 64)

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def encode_parts(
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel | None,
    data: ShapesDataset,
    batch_size: int = 256,
    size: int | None = None,
) -> EncodedData:
    """Encode images (posterior mean and std) and tokenize captions; embed them too if a text encoder is given.

    With `size` larger than 32 (a larger model's image size, e.g. SD 1.5's 512), the kit's 32 px shapes are
    drawn at that size first (`lorakit.data.resize_images`); images of any other size are encoded as they are.
    """
    dev = vae.device
    upscale = size is not None and data.images.shape[-1] == IMAGE_SIZE and size > IMAGE_SIZE
    step = max(1, batch_size * IMAGE_SIZE**2 // size**2) if upscale else batch_size  # the same pixels per batch
    means, stds = [], []
    for i in range(0, len(data), step):
        images = data.images[i : i + step]  # (b, 3, 32, 32) uint8
        if upscale:
            images = resize_images(images, size)  # (b, 3, size, size)
        dist = vae.encode(to_model_range(images).to(dev)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    ids = tokenizer(data.captions, padding="max_length", truncation=True, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", return_tensors="pt").input_ids
    enc = EncodedData(torch.cat(means), torch.cat(stds), ids, empty_ids)
    if text_encoder is not None:
        enc.text = torch.cat([text_encoder(ids[i : i + batch_size].to(dev))[0] for i in range(0, len(ids), batch_size)])
        enc.empty_text = text_encoder(empty_ids.to(dev))[0]
    return enc


def encode_data(pipe: StableDiffusionPipeline, data: ShapesDataset, batch_size: int = 256) -> EncodedData:
    """Encode a dataset with a pipeline's frozen VAE, tokenizer and text encoder, at the size the pipeline draws."""
    return encode_parts(pipe.vae, pipe.tokenizer, pipe.text_encoder, data, batch_size, size=image_size(pipe))


def check_training_args(steps: int, lr: float | None, batch_size: int = 1) -> None:
    """Raise a clear ValueError for a step count, learning rate or batch size no training can use."""
    require_whole("steps", steps)
    require_whole("batch_size", batch_size)
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive, finite learning rate, got {lr!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How one training run goes; checked when made, so a bad value stops before any model changes.

    `lr` None means the default of what trains: 1e-3 for `train`, 3e-3 (LoRA) or 1e-4 (full) for
    `finetune`, 3e-3 for `train_dreambooth`. `caption_dropout` trains that share of samples with the
    empty prompt; `augment` trains on every flipped and shifted view of the images
    (`lorakit.data.augmented`).
    """

    steps: int = 250
    lr: float | None = None
    batch_size: int = 32
    seed: int = 0
    weight_decay: float = 0.0
    caption_dropout: float = 0.1
    augment: bool = False

    def __post_init__(self) -> None:
        check_training_args(steps=self.steps, lr=self.lr, batch_size=self.batch_size)
        require_whole("seed", self.seed, minimum=0)
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout is a share of samples in [0, 1), got {self.caption_dropout!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")


def require_config(config: object, default_lr: float) -> TrainConfig:
    """`config` checked to be a TrainConfig, with lr set to `default_lr` where it is None."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (e.g. TrainConfig(steps=100, lr=1e-3)), got {type(config).__name__}")
    return config if config.lr is not None else replace(config, lr=default_lr)


@dataclass(frozen=True)
class Denoiser:
    """What a denoising loss needs of a model: the UNet, the text encoder, the training noise schedule, the
    VAE's latent scaling factor (a pipeline has them all: `Denoiser.of(pipe)`) and the UNet's device."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    schedule: DDPMScheduler
    scaling_factor: float
    # Looked up once: diffusers' `unet.device` walks every module (about 3.5 ms on the tiny UNet with a LoRA).
    device: torch.device

    @classmethod
    def of(cls, pipe: StableDiffusionPipeline) -> Denoiser:
        """A pipeline's denoiser, with the DDPM schedule it was trained on."""
        return cls(pipe.unet, pipe.text_encoder, training_scheduler(), pipe.vae.config.scaling_factor, pipe.unet.device)


def denoising_loss(
    model: Denoiser | StableDiffusionPipeline,
    enc: EncodedData,
    batch_size: int,
    gen: torch.Generator,
    caption_dropout: float = 0.0,
    run_text_encoder: bool = False,
) -> torch.Tensor:
    """One batch's noise-prediction loss: MSE between the noise added to latents and the UNet's guess.

    Draws, in this order from `gen`: the batch, the latent sample, the noise, the timesteps, and which
    captions drop to "". Uses the cached text embeddings unless `run_text_encoder` (it is training).
    """
    m = model if isinstance(model, Denoiser) else Denoiser.of(model)
    noisy, t, noise, condition = training_batch(m, enc, batch_size, gen, caption_dropout, run_text_encoder)
    text = m.text_encoder(condition)[0] if run_text_encoder else condition
    return F.mse_loss(m.unet(noisy, t, encoder_hidden_states=text).sample, noise)


def training_batch(
    m: Denoiser, enc: EncodedData, batch_size: int, gen: torch.Generator, caption_dropout: float, token_ids: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch drawn from `gen` as `denoising_loss` draws it: (noisy latents, t, noise, condition).

    The condition is the captions' token ids, (B, 16), when `token_ids` (the text encoder trains and
    must run), else their cached text embeddings, (B, 16, 64); dropped captions become the empty prompt.
    """
    dev = m.device
    idx, noisy, noise, t = noised_batch(enc, batch_size, gen, m.schedule, m.scaling_factor, dev)
    drop = torch.rand(batch_size, generator=gen) < caption_dropout
    if token_ids:
        return noisy, t, noise, torch.where(drop[:, None], enc.empty_ids, enc.ids[idx]).to(dev)  # (B, 16)
    return noisy, t, noise, torch.where(drop.to(dev)[:, None, None], enc.empty_text, enc.text[idx])  # (B, 16, 64)


@torch.no_grad()
def per_sample_losses(model: Denoiser | StableDiffusionPipeline, enc: EncodedData, n: int, seed: int) -> torch.Tensor:
    """The noise-prediction loss of n fixed draws (image, latent sample, noise and timestep, all from `seed`), one
    number per draw: (n,). The same seed gives the same draws, so two models, or one model along training, are
    compared on exactly the same noise; the text encoder always runs, in case it is training."""
    require_whole("n", n)
    m = model if isinstance(model, Denoiser) else Denoiser.of(model)
    dev = m.device
    idx, noisy, noise, t = noised_batch(enc, n, torch.Generator().manual_seed(seed), m.schedule, m.scaling_factor, dev)
    text = m.text_encoder(enc.ids[idx].to(dev))[0]  # (n, 16, 64)
    return (m.unet(noisy, t, encoder_hidden_states=text).sample - noise).pow(2).mean((1, 2, 3)).cpu()


def noised_batch(
    enc: EncodedData, batch_size: int, gen: torch.Generator, schedule: DDPMScheduler, scaling_factor: float,
    dev: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw a batch, its latent sample, noise and timesteps from `gen`, in that order: (idx, noisy latents, noise, t)."""
    idx = torch.randint(0, len(enc), (batch_size,), generator=gen)
    eps = torch.randn(enc.latent_mean[idx].shape, generator=gen).to(dev)
    latents = (enc.latent_mean[idx] + enc.latent_std[idx] * eps) * scaling_factor  # (B, 4, 8, 8)
    noise = torch.randn(latents.shape, generator=gen).to(dev)
    t = torch.randint(0, schedule.config.num_train_timesteps, (batch_size,), generator=gen).to(dev)
    return idx, schedule.add_noise(latents, noise, t), noise, t


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, step: int, lr: float) -> float:
    """Backpropagate a loss and step the optimizer; a NaN or infinite loss stops with advice instead."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower the learning rate (lr={lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()
