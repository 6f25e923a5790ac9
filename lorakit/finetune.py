"""Fine-tuning the tiny pipeline with the diffusion (noise-prediction) loss.

The loop trains whatever parameters of `pipe.unet` and `pipe.text_encoder` require gradients:
LoRA factors after `lorakit.lora.add_lora` or peft's `add_adapter`, or every weight for full
fine-tuning. The VAE is always frozen, so images are encoded once; so are captions while the text
encoder is frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from lorakit.data import ShapesDataset, to_model_range
from lorakit.pipeline import training_scheduler


@dataclass
class EncodedData:
    """A dataset pushed through the frozen VAE and text encoder once."""

    latent_mean: torch.Tensor  # (N, 4, 8, 8), unscaled
    latent_std: torch.Tensor  # (N, 4, 8, 8)
    text: torch.Tensor  # (N, 16, 64) text-encoder outputs for each caption
    empty_text: torch.Tensor  # (1, 16, 64) the empty prompt's, for caption dropout
    ids: torch.Tensor  # (N, 16) token ids, for when the text encoder trains too
    empty_ids: torch.Tensor  # (1, 16)

    def __len__(self) -> int:
        return len(self.text)


@torch.no_grad()
def encode_data(pipe: StableDiffusionPipeline, data: ShapesDataset, batch_size: int = 256) -> EncodedData:
    """Encode images (posterior mean and std) and captions (text embeddings) with the frozen parts."""
    dev = pipe.device
    means, stds, texts, all_ids = [], [], [], []
    for i in range(0, len(data), batch_size):
        dist = pipe.vae.encode(to_model_range(data.images[i : i + batch_size]).to(dev)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
        ids = pipe.tokenizer(data.captions[i : i + batch_size], padding="max_length", truncation=True,
                             return_tensors="pt").input_ids
        texts.append(pipe.text_encoder(ids.to(dev))[0])
        all_ids.append(ids)
    empty_ids = pipe.tokenizer([""], padding="max_length", return_tensors="pt").input_ids
    empty_text = pipe.text_encoder(empty_ids.to(dev))[0]
    return EncodedData(torch.cat(means), torch.cat(stds), torch.cat(texts), empty_text, torch.cat(all_ids), empty_ids)


def train(
    pipe: StableDiffusionPipeline,
    data: ShapesDataset | EncodedData,
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    weight_decay: float = 0.0,
    caption_dropout: float = 0.1,
    progress: bool = True,
) -> list[float]:
    """Train the trainable parameters of UNet and text encoder with AdamW on the noise-prediction loss.

    Returns the loss of every step.

    All randomness (batches, noise, timesteps) comes from one generator seeded with `seed`, so two
    models with equal weights trained with the same seed see exactly the same batches.
    `caption_dropout` trains that share of samples with the empty prompt, as in pre-training: an
    adapter also changes the unconditional prediction, and classifier-free guidance amplifies any
    drift there, so it must keep learning it.
    """
    text_params = [p for p in pipe.text_encoder.parameters() if p.requires_grad]
    params = [p for p in pipe.unet.parameters() if p.requires_grad] + text_params
    if not params:
        raise ValueError("nothing to train: add a LoRA (lorakit.lora.add_lora or unet.add_adapter), "
                         "or unfreeze the UNet for full fine-tuning (pipe.unet.requires_grad_(True))")
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    enc = data if isinstance(data, EncodedData) else encode_data(pipe, data)
    dev = pipe.device
    sf = pipe.vae.config.scaling_factor
    schedule = training_scheduler()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    pipe.unet.train()
    pipe.text_encoder.train(bool(text_params))
    losses = []
    for step in tqdm(range(steps), desc="train", disable=not progress):
        idx = torch.randint(0, len(enc), (batch_size,), generator=gen)
        eps = torch.randn(enc.latent_mean[idx].shape, generator=gen).to(dev)
        latents = (enc.latent_mean[idx] + enc.latent_std[idx] * eps) * sf  # (B, 4, 8, 8)
        noise = torch.randn(latents.shape, generator=gen).to(dev)
        t = torch.randint(0, schedule.config.num_train_timesteps, (batch_size,), generator=gen).to(dev)
        drop = torch.rand(batch_size, generator=gen) < caption_dropout
        if text_params:  # the text encoder learns too: run it on the (dropped-out) captions
            ids = torch.where(drop[:, None], enc.empty_ids, enc.ids[idx])  # (B, 16)
            text = pipe.text_encoder(ids.to(dev))[0]
        else:
            text = torch.where(drop.to(dev)[:, None, None], enc.empty_text, enc.text[idx])  # (B, 16, 64)
        noisy = schedule.add_noise(latents, noise, t)
        loss = F.mse_loss(pipe.unet(noisy, t, encoder_hidden_states=text).sample, noise)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower the learning rate (lr={lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return losses
