"""Fine-tuning the tiny pipeline with the diffusion (noise-prediction) loss, and what it costs.

The loop trains whatever parameters of `pipe.unet` and `pipe.text_encoder` require gradients:
LoRA factors after `lorakit.lora.add_lora` or peft's `add_adapter`, or every weight for full
fine-tuning. The VAE is always frozen, so images are encoded once; so are captions while the text
encoder is frozen.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from lorakit.arguments import require_whole
from lorakit.data import ShapesDataset, augmented
from lorakit.diffusion import (
    Denoiser,
    EncodedData,
    TrainConfig,
    denoising_loss,
    encode_data,
    optimizer_step,
    require_config,
)
from lorakit.evaluation import score_prompts
from lorakit.lora import add_lora, lora_layers, merged_lora_names, peft_lora_names, remove_lora
from lorakit.memory import TrainingBytes, measure_peak_memory, training_bytes
from lorakit.pipeline import DEFAULT_STEPS, LORA_TARGETS, TEXT_LORA_TARGETS
from lorakit.seeds import EVAL_SEED, seeded


@dataclass(frozen=True)
class Prior:
    """DreamBooth's prior preservation (Ruiz et al. 2022): each step also draws a batch of the same size
    from `data` (normally the frozen base model's own samples for the class prompt, e.g. "a triangle")
    and adds `weight` x their noise-prediction loss, so the class word keeps meaning what it meant
    (diffusers' train_dreambooth_lora.py: --with_prior_preservation, prior_loss_weight 1)."""

    data: ShapesDataset | EncodedData
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_data(self.data, "Prior.data")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"the prior's weight must be >= 0, got {self.weight!r}")


def _check_data(data: object, name: str) -> None:
    if not isinstance(data, (ShapesDataset, EncodedData)):
        raise TypeError(f"{name} must be a ShapesDataset (lorakit.data.make_dataset) or EncodedData "
                        f"(lorakit.diffusion.encode_data), got {type(data).__name__}")


def train(
    pipe: StableDiffusionPipeline,
    data: ShapesDataset | EncodedData,
    config: TrainConfig,
    prior: Prior | None = None,
    on_step: Callable[[int, float], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = True,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> list[float]:
    """Train the trainable parameters of UNet and text encoder with AdamW on the noise-prediction loss.

    Returns the loss of every step (with `prior` or `penalty`, the total: instance loss + weight x prior
    loss + penalty). `penalty()` is a term added to every step's loss, e.g. a nuclear norm of ΔW: the
    regulariser claim C3 imagines LoRA to be (notebook 02 trains one beside LoRA).

    All randomness (batches, noise, timesteps) comes from one generator seeded with `config.seed`, so
    two models with equal weights trained with the same seed see exactly the same batches.
    `config.caption_dropout` trains that share of samples with the empty prompt, as in pre-training:
    an adapter also changes the unconditional prediction, and classifier-free guidance amplifies any
    drift there, so it must keep learning it. `on_step(step, loss)` runs after every step (e.g. an
    evaluation every K steps, or `lorakit.adapters.CheckpointSaver`); pass `optimizer` to keep its
    state across calls. DreamBooth's two regularisers: `prior` (prior preservation) and
    `config.augment` (every flipped and shifted view of the images).
    """
    config = require_config(config, default_lr=1e-3)
    _check_data(data, "data")
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"prior must be a Prior (e.g. Prior(class_images, weight=1.0)), got {type(prior).__name__}")
    if penalty is not None and not callable(penalty):
        raise TypeError(f"penalty must be a function of no arguments returning a scalar tensor, got {type(penalty).__name__}")
    merged = merged_lora_names(pipe.unet) + merged_lora_names(pipe.text_encoder)
    if merged:
        raise ValueError(f"{len(merged)} LoRA layers are merged into their base weights (e.g. {merged[0]}): a merged "
                         "adapter no longer trains; unmerge it first (lorakit.lora.unmerge_lora, or pipe.unfuse_lora())")
    text_params = [p for p in pipe.text_encoder.parameters() if p.requires_grad]
    params = [p for p in pipe.unet.parameters() if p.requires_grad] + text_params
    if not params:
        raise ValueError("nothing to train: add a LoRA (lorakit.lora.add_lora or unet.add_adapter), "
                         "or unfreeze the UNet for full fine-tuning (pipe.unet.requires_grad_(True))")
    enc, prior_enc = encoded_training_data(pipe, data, config, prior)
    denoiser = Denoiser.of(pipe)
    opt = optimizer if optimizer is not None else torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    pipe.unet.train()
    pipe.text_encoder.train(bool(text_params))
    losses = []
    for step in tqdm(range(config.steps), desc="train", disable=not progress):
        loss = denoising_loss(denoiser, enc, config.batch_size, gen, config.caption_dropout, bool(text_params))
        if prior_enc is not None:
            loss = loss + prior.weight * denoising_loss(denoiser, prior_enc, config.batch_size, gen,
                                                        config.caption_dropout, bool(text_params))
        if penalty is not None:
            loss = loss + penalty()
        losses.append(optimizer_step(opt, loss, step, config.lr))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return losses


def encoded_training_data(
    pipe: StableDiffusionPipeline, data: ShapesDataset | EncodedData, config: TrainConfig, prior: Prior | None = None
) -> tuple[EncodedData, EncodedData | None]:
    """The training data (every augmented view if `config.augment`) and the prior's, encoded once by `pipe`."""
    _check_data(data, "data")
    if config.augment:
        if isinstance(data, EncodedData):
            raise ValueError("augment=True needs images (a ShapesDataset), not already encoded data")
        data = augmented(data)
    enc = data if isinstance(data, EncodedData) else encode_data(pipe, data)
    prior_enc = None if prior is None else prior.data if isinstance(prior.data, EncodedData) else encode_data(pipe, prior.data)
    return enc, prior_enc


@dataclass
class History:
    """What happened during `finetune`: the loss every step and the measurements every K steps."""

    method: str
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    concept_accuracy: list[float] = field(default_factory=list)  # share of concept prompts drawn right
    base_accuracy: list[float] = field(default_factory=list)  # share of other prompts still fully right
    seconds: float = 0.0  # training only, evaluations excluded
    memory: TrainingBytes | None = None

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, len(self.loss))

    def steps_to(self, accuracy: float) -> int | None:
        """The first evaluated step whose concept accuracy reached `accuracy` (None if never)."""
        return next((s for s, a in zip(self.eval_steps, self.concept_accuracy) if a >= accuracy), None)


@dataclass(frozen=True)
class Evaluation:
    """What `finetune` measures along training: every `every` steps, n images per prompt of the concept
    prompts and of the other prompts (fixed seeds, `sample_steps` sampler steps), scored by the classifier."""

    every: int
    concept_prompts: Sequence[str] = ()
    base_prompts: Sequence[str] = ()
    n: int = 4
    sample_steps: int = DEFAULT_STEPS

    def __post_init__(self) -> None:
        require_whole("every", self.every)
        require_whole("n", self.n)
        for name in ("concept_prompts", "base_prompts"):
            prompts = getattr(self, name)
            if isinstance(prompts, str):
                raise TypeError(f"{name} must be a list of prompts; got the string {prompts!r} (write [{prompts!r}])")


METHOD_LR = {"lora": 3e-3, "full": 1e-4}  # finetune's default learning rate per method


def finetune(
    pipe: StableDiffusionPipeline,
    data: ShapesDataset | EncodedData,
    config: TrainConfig | None = None,
    method: str = "lora",
    rank: int = 4,
    alpha: float | None = None,
    text_encoder: bool = True,
    evaluation: Evaluation | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[StableDiffusionPipeline, History]:
    """Fine-tune with LoRA (from-scratch layers) or fully, on the same loop; returns (pipe, History).

    method="lora": rank-r adapters on the UNet's attention (and the text encoder's, if
    `text_encoder`); the base weights stay frozen. method="full": every UNet weight (and every text
    encoder weight but the token-embedding table, which LoRA cannot change either, if `text_encoder`)
    trains, so a new word's embedding is treated the same by both. `config` defaults to TrainConfig()
    (250 steps); its lr, if None, to METHOD_LR[method]. With `evaluation`, the prompts are drawn and
    scored along the way; `on_step(step, loss)` runs after every step (e.g. held-out losses). Neither
    counts as training time.
    """
    if method not in ("lora", "full"):
        raise ValueError(f"method must be 'lora' or 'full', got {method!r}")
    config = require_config(config if config is not None else TrainConfig(), default_lr=METHOD_LR[method])
    if method == "lora":
        require_whole("rank", rank)
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be > 0 (the scale is alpha / rank; leave it None for alpha = rank), got {alpha!r}")
    if evaluation is not None and not isinstance(evaluation, Evaluation):
        raise TypeError(f"evaluation must be an Evaluation (e.g. Evaluation(every=25, concept_prompts=[...])), "
                        f"got {type(evaluation).__name__}")
    _check_data(data, "data")
    already = [n for part in (pipe.unet, pipe.text_encoder) for n in list(lora_layers(part)) + peft_lora_names(part)]
    if already:
        raise ValueError(f"the pipeline already has LoRA layers (e.g. {already[0]}), from an earlier finetune or "
                         "add_adapter: load a fresh pipeline (lorakit.load_pipeline()) for each run")
    if method == "lora":
        alpha = alpha if alpha is not None else rank
        with seeded(config.seed):  # the A factors' random init
            add_lora(pipe.unet, LORA_TARGETS, rank=rank, alpha=alpha)
            if text_encoder:
                try:
                    add_lora(pipe.text_encoder, TEXT_LORA_TARGETS, rank=rank, alpha=alpha)
                except (ValueError, TypeError):
                    remove_lora(pipe.unet)  # leave the pipeline as it came
                    raise
    else:
        pipe.unet.requires_grad_(True)
        pipe.text_encoder.requires_grad_(text_encoder)
        pipe.text_encoder.get_input_embeddings().requires_grad_(False)  # the token table: LoRA leaves it too
    history = History(method)
    params = [p for part in (pipe.unet, pipe.text_encoder) for p in part.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr)
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def evaluate(step: int, loss: float) -> None:
        if evaluation is None or step % evaluation.every:
            return
        t0 = time.perf_counter()
        pipe.unet.eval()
        pipe.text_encoder.eval()
        history.eval_steps.append(step)
        for prompts, accuracies in ((evaluation.concept_prompts, history.concept_accuracy),
                                    (evaluation.base_prompts, history.base_accuracy)):
            if prompts:
                accuracies.append(score_prompts(pipe, prompts, evaluation.n, seed=EVAL_SEED,
                                                steps=evaluation.sample_steps).accuracy["all"])
        pipe.unet.train()
        pipe.text_encoder.train(text_encoder)
        clock["paused"] += time.perf_counter() - t0

    if evaluation is not None:
        evaluate(0, float("nan"))  # the starting point
    clock["start"], clock["paused"] = time.perf_counter(), 0.0  # time training only, from here on
    def after_step(step: int, loss: float) -> None:
        evaluate(step, loss)
        if on_step is not None:
            t0 = time.perf_counter()
            on_step(step, loss)
            clock["paused"] += time.perf_counter() - t0

    history.loss = train(pipe, data, config, progress=progress, on_step=after_step, optimizer=opt)
    history.seconds = time.perf_counter() - clock["start"] - clock["paused"]
    history.memory = training_bytes(params, opt)
    return pipe, history


def peak_training_memory(method: str, rank: int = 4, steps: int = 5, batch_size: int = 32) -> int:
    """Peak RSS rise while fine-tuning the tiny model on the CPU for `steps` steps at `batch_size`, in a fresh process.

    A fresh process, because memory freed by earlier runs in this one is reused by the allocator
    and would hide part of the peak.
    """
    require_whole("batch_size", batch_size)
    code = (f"from lorakit.finetune import _memory_probe; "
            f"_memory_probe({method!r}, {int(rank)}, {int(steps)}, {int(batch_size)})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the memory probe failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def _memory_probe(method: str, rank: int, steps: int, batch_size: int = 32) -> None:
    """Run in a subprocess by peak_training_memory: print the peak RSS rise in bytes."""
    from lorakit.data import make_dataset
    from lorakit.paths import PIPELINE_DIR
    from lorakit.pipeline import load_pipeline

    pipe = load_pipeline(PIPELINE_DIR, device="cpu")  # the tiny model whatever LORAKIT_BASE says: CPU memory, minutes
    data = encode_data(pipe, make_dataset(64, seed=0, include=["orange"]))
    with measure_peak_memory("cpu") as peak:
        finetune(pipe, data, TrainConfig(steps=steps, batch_size=batch_size), method=method, rank=rank, progress=False)
    print(peak.peak_bytes)
