"""Pre-training the tiny Stable Diffusion from scratch, the way SD itself was built, in two stages.

1. The VAE learns to compress 3x32x32 images to 4x8x8 latents and back (reconstruction + a
   small KL term). Its latents are then scaled to unit spread (SD's `scaling_factor`). Like SD's
   VAE, a general image codec trained on broader data than the text-to-image model, it sees every
   concept, held-out ones included: otherwise no adapter could ever produce them.
2. The text encoder and the UNet learn together to predict the noise added to latents, given
   the caption (SD 1.5 kept a frozen CLIP; ours has to learn its words). 10% of captions are
   dropped to "" so the model also learns the unconditional prediction that classifier-free
   guidance needs.

Held-out concepts (lorakit.data.HELD_OUT_WORDS) never appear in stage 2: LoRA teaches them later.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lorakit.arguments import require_whole
from lorakit.data import ATTRIBUTE_WORDS, make_dataset, pretraining_prompts, to_model_range
from lorakit.devices import device as pick_device
from lorakit.diffusion import Denoiser, denoising_loss, encode_parts
from lorakit.evaluation import score_prompts
from lorakit.layout import to_sd15_layout
from lorakit.paths import RUNS_DIR, atomic_folder, atomic_path, check_output_folder, json_text, repo_path, swap_in
from lorakit.pipeline import (
    assemble_pipeline,
    build_text_encoder,
    build_unet,
    build_vae,
    training_scheduler,
)
from lorakit.seeds import QUICK_ACCURACY_SEED, seeded
from lorakit.tokenizer import build_tokenizer

CHECKPOINT_NAME = "checkpoint.pt"
REPORT_NAME = "training_report.json"  # settings and measured times, written next to the weights
DEFAULT_WORK_DIR = RUNS_DIR / "pretrain"
# what a pipeline folder written by this module holds (and nothing else)
PIPELINE_ENTRIES = frozenset({"model_index.json", "vae", "text_encoder", "tokenizer", "unet", "scheduler", REPORT_NAME})


@dataclass
class PretrainConfig:
    """Every knob of a pre-training run; the defaults are what data/tiny-sd was trained with."""

    vae_steps: int = 600
    unet_steps: int = 2400
    batch_size: int = 32
    vae_lr: float = 1e-3
    lr: float = 5e-4  # text encoder + UNet
    weight_decay: float = 1e-2  # AdamW's, on the text encoder + UNet (none on the VAE)
    grad_clip: float = 1.0  # largest gradient norm, both stages
    ema_decay: float = 0.999  # the EMA copy of the denoiser that is shipped
    ema_power: float = 0.75  # diffusers' EMA warm-up: decay grows as 1 - (1 + step) ** -power
    warmup_steps: int = 100
    n_images: int = 20_000
    caption_dropout: float = 0.1
    kl_weight: float = 1e-5
    checkpoint_every: int = 500
    eval_every: int = 0  # 0: no accuracy checks during training
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vae_steps", "unet_steps", "batch_size", "n_images"):
            require_whole(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "seed"):
            require_whole(name, getattr(self, name), minimum=0)
        for name in ("vae_lr", "lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive learning rate, got {value!r}")
        for name in ("weight_decay", "grad_clip", "ema_power"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout is a share of captions in [0, 1), got {self.caption_dropout!r}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight!r}")


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _check_finite(loss: torch.Tensor, stage: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"{stage} loss became {loss.item()} at step {step}: lower the learning rate "
            "(--lr / --vae-lr) and restart, or --resume from the last checkpoint"
        )


class _Run:
    """State of one pre-training run: models, optimisers, data, and where it stands."""

    def __init__(self, cfg: PretrainConfig, dev: torch.device) -> None:
        self.cfg, self.dev = cfg, dev
        self.tokenizer = build_tokenizer()  # the models' random init draws from torch's global RNG (seeded by pretrain)
        self.vae = build_vae().to(dev)
        self.text_encoder = build_text_encoder(self.tokenizer).to(dev)
        self.unet = build_unet().to(dev)
        self.scheduler = training_scheduler()
        self.data = make_dataset(cfg.n_images, seed=cfg.seed)  # pre-training concepts only
        self.vae_data = make_dataset(cfg.n_images, seed=cfg.seed + 1, include=ATTRIBUTE_WORDS)
        self.vae_opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        self.denoiser_params = list(self.text_encoder.parameters()) + list(self.unet.parameters())
        self.opt = torch.optim.AdamW(self.denoiser_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema = EMAModel(self.denoiser_params, decay=cfg.ema_decay, use_ema_warmup=True, power=cfg.ema_power)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.stage, self.step = "vae", 0

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "stage": self.stage,
            "step": self.step,
            "vae": self.vae.state_dict(),
            "text_encoder": self.text_encoder.state_dict(),
            "unet": self.unet.state_dict(),
            "vae_opt": self.vae_opt.state_dict(),
            "opt": self.opt.state_dict(),
            "ema": self.ema.state_dict(),
            "scaling_factor": self.vae.config.scaling_factor,
            "gen": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != asdict(self.cfg):
            diff = {k: (state["config"].get(k), v) for k, v in asdict(self.cfg).items() if state["config"].get(k) != v}
            raise ValueError(f"the checkpoint was made with other settings (checkpoint, now): {diff}; "
                             "pass the same options to resume, or start afresh without --resume")
        self.stage, self.step = state["stage"], state["step"]
        for name in ("vae", "text_encoder", "unet", "vae_opt", "opt", "ema"):
            getattr(self, name).load_state_dict(state[name])
        self.vae.register_to_config(scaling_factor=state["scaling_factor"])
        self.gen.set_state(state["gen"])

    def save_checkpoint(self, work_dir: Path) -> None:
        with atomic_path(work_dir / CHECKPOINT_NAME) as tmp:
            torch.save(self.state_dict(), tmp)

    # -- stage 1: the VAE --------------------------------------------------------------------
    def vae_step(self) -> float:
        cfg = self.cfg
        idx = torch.randint(0, len(self.vae_data), (cfg.batch_size,), generator=self.gen)
        x = to_model_range(self.vae_data.images[idx]).to(self.dev)  # (B, 3, 32, 32) in [-1, 1]
        for group in self.vae_opt.param_groups:
            group["lr"] = cfg.vae_lr * _lr_factor(self.step, cfg.vae_steps, cfg.warmup_steps)
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample()).sample
        loss = F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean() / x[0].numel()
        _check_finite(loss, "VAE", self.step)
        self.vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.cfg.grad_clip)
        self.vae_opt.step()
        return loss.item()

    def encode_dataset(self) -> None:
        """Encode every image once (posterior mean and std) and fit SD's latent scaling factor."""
        self.vae.eval()
        self.enc = encode_parts(self.vae, self.tokenizer, None, self.data, batch_size=512)  # the text encoder trains
        if self.stage == "vae":  # fitted once, when the VAE is done; kept in the checkpoint after
            self.vae.register_to_config(scaling_factor=float(1.0 / self.enc.latent_mean.std()))

    # -- stage 2: text encoder + UNet ----------------------------------------------------------
    def denoiser_step(self) -> float:
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(self.step, cfg.unet_steps, cfg.warmup_steps)
        denoiser = Denoiser(self.unet, self.text_encoder, self.scheduler, self.vae.config.scaling_factor, self.dev)
        loss = denoising_loss(denoiser, self.enc, cfg.batch_size, self.gen, cfg.caption_dropout, run_text_encoder=True)
        _check_finite(loss, "UNet", self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.denoiser_params, self.cfg.grad_clip)
        self.opt.step()
        self.ema.step(self.denoiser_params)
        return loss.item()

    def ema_pipeline(self) -> StableDiffusionPipeline:
        """The pipeline with EMA weights swapped in (call `self.ema.restore` after use)."""
        self.ema.store(self.denoiser_params)
        self.ema.copy_to(self.denoiser_params)
        return assemble_pipeline(self.vae.eval(), self.text_encoder.eval(), self.tokenizer, self.unet.eval())


def is_pipeline_folder(path: Path) -> bool:
    """True if `path` holds a pipeline folder as `save_pipeline_atomic` writes it, and nothing else."""
    entries = {p.name for p in path.iterdir()}
    return "model_index.json" in entries and entries <= PIPELINE_ENTRIES


def save_pipeline_atomic(pipe: StableDiffusionPipeline, out: str | Path, overwrite: bool = False,
                         report: dict | None = None) -> Path:
    """save_pretrained (float16 safetensors, SD 1.5's layout) into a folder beside `out`, check it loads, then swap it in.

    `out` must be new, empty, or (with `overwrite`) a pipeline folder this function wrote; anything
    else is refused before any work. The previous version is removed only once the new one is in
    place and loads with finite weights; a shipped one (data/) is kept under runs/replaced/.
    `report` is written into the folder as training_report.json (NaN becomes null).
    """
    from lorakit.pipeline import load_pipeline  # the check loads the result exactly as notebooks do

    out = Path(out)
    check_output_folder(out, is_pipeline_folder, "pipeline folder", overwrite, flag="--overwrite (overwrite=True)")
    with atomic_folder(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for weights in tmp.glob("*/*.safetensors"):  # float16 on disk halves data/; loads as float32
            state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}
            bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
            if bad:
                raise FloatingPointError(f"{weights.parent.name} has non-finite weights ({bad[:3]}) in float16; "
                                         f"nothing was written to {out}")
            save_file(state, weights, metadata={"format": "pt"})
        to_sd15_layout(tmp)  # tokenizer files and text-encoder keys as SD 1.5's: both transformers generations load it
        if report is not None:
            (tmp / REPORT_NAME).write_text(json_text(report, indent=1))
        for f in tmp.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        os.chmod(tmp, 0o755)
        load_pipeline(tmp, device="cpu")  # written and checked before anything is replaced
        kept = swap_in(tmp, out)
    if kept is not None:
        tqdm.write(f"the previous {out.name} is kept at {kept}")
    return out


def quick_accuracy(pipe: StableDiffusionPipeline, n_per_prompt: int = 2, seed: int = QUICK_ACCURACY_SEED) -> dict[str, float]:
    """Attribute accuracy on every pre-training prompt, a few images each (a progress signal)."""
    return score_prompts(pipe, pretraining_prompts(), n_per_prompt, seed).accuracy


def _nested(a: Path, b: Path) -> bool:
    """True if two folders are the same or one lies inside the other."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def _is_work_folder(path: Path) -> bool:
    return {p.name for p in path.iterdir()} == {CHECKPOINT_NAME}


def pretrain(
    out: str | Path | None = None,
    config: PretrainConfig | None = None,
    work_dir: str | Path = DEFAULT_WORK_DIR,
    resume: bool = False,
    device: str | torch.device | None = None,
    overwrite: bool = False,
) -> StableDiffusionPipeline:
    """Train the tiny pipeline from scratch (VAE, then text encoder + UNet); save it if `out`.

    Every argument is checked before any work: `out` must be new or empty, or a pipeline folder
    with `overwrite`; `work_dir` (relative paths start at the repository root) must be new or
    empty, or hold only a checkpoint, which is continued with `resume` or replaced with `overwrite`.
    """
    cfg = config or PretrainConfig()
    if not isinstance(cfg, PretrainConfig):
        raise TypeError(f"config must be a PretrainConfig, got {type(cfg).__name__}")
    dev = pick_device(device)
    work_dir = repo_path(work_dir)
    ckpt = work_dir / CHECKPOINT_NAME
    if out is not None:
        out = Path(out)
        if _nested(out, work_dir):
            raise ValueError(f"the pipeline folder {out} and the work folder {work_dir} must be separate folders, "
                             "neither inside the other (e.g. --out runs/tiny-sd --work-dir runs/pretrain)")
        check_output_folder(out, is_pipeline_folder, "pipeline folder", overwrite, flag="--overwrite (overwrite=True)")
    if resume:
        if not ckpt.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}; run without --resume to start afresh")
    else:
        check_output_folder(work_dir, _is_work_folder, "pre-training work folder", overwrite,
                            flag="--resume to continue it, or --overwrite (overwrite=True) to start afresh")
    # torch's global RNG (the models' init, the VAE's posterior samples) is seeded for the run only
    with seeded(cfg.seed):
        return _run_stages(cfg, dev, work_dir, ckpt, out, resume, overwrite)


def _run_stages(cfg: PretrainConfig, dev: torch.device, work_dir: Path, ckpt: Path, out: Path | None, resume: bool,
                overwrite: bool) -> StableDiffusionPipeline:
    """pretrain's work once its arguments are checked: (resume and) run both stages, save the pipeline."""
    run = _Run(cfg, dev)
    if resume:
        try:  # the kit's own checkpoint (it holds a generator state, so not weights_only)
            state = torch.load(ckpt, map_location=dev, weights_only=False)
            missing = {"config", "stage", "step", "vae", "unet", "text_encoder"} - set(state)
        except Exception as err:  # a truncated or foreign file fails in many ways; all mean the same here
            raise ValueError(f"the checkpoint {ckpt} is unreadable ({type(err).__name__}); run without --resume "
                             "(with --overwrite) to start afresh") from err
        if missing:
            raise ValueError(f"{ckpt} is not a pre-training checkpoint (missing {sorted(missing)}); run without "
                             "--resume (with --overwrite) to start afresh")
        run.load_state_dict(state)
        tqdm.write(f"resumed at stage {run.stage!r}, step {run.step}")

    started = time.perf_counter()
    seconds: dict[str, float] = {}
    if run.stage == "vae":
        run.vae.train()
        bar = tqdm(range(run.step, cfg.vae_steps), desc="1/2 VAE", initial=run.step, total=cfg.vae_steps)
        for run.step in bar:
            loss = run.vae_step()
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if cfg.checkpoint_every and (run.step + 1) % cfg.checkpoint_every == 0:
                run.step += 1
                run.save_checkpoint(work_dir)
    run.encode_dataset()
    seconds["vae_and_encoding"] = time.perf_counter() - started
    if run.stage == "vae":
        run.stage, run.step = "unet", 0
        run.save_checkpoint(work_dir)

    run.text_encoder.train()
    run.unet.train()
    run.vae.requires_grad_(False)
    loss = float("nan")
    bar = tqdm(range(run.step, cfg.unet_steps), desc="2/2 text encoder + UNet", initial=run.step, total=cfg.unet_steps)
    for step in bar:
        run.step = step
        loss = run.denoiser_step()
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.unet_steps:
            run.step = done
            run.save_checkpoint(work_dir)
        if cfg.eval_every and done % cfg.eval_every == 0:
            acc = quick_accuracy(run.ema_pipeline())
            run.ema.restore(run.denoiser_params)
            run.text_encoder.train()
            run.unet.train()
            tqdm.write(f"step {done}: loss {loss:.4f}, accuracy " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))

    seconds["text_encoder_and_unet"] = time.perf_counter() - started - seconds["vae_and_encoding"]
    pipe = run.ema_pipeline()  # final weights are the EMA ones
    if out is not None:
        report = {
            **asdict(cfg),
            "resumed": resume,
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "seconds_vae": round(seconds["vae_and_encoding"], 1),
            "seconds_text_encoder_unet": round(seconds["text_encoder_and_unet"], 1),
            "seconds_total": round(time.perf_counter() - started, 1),
            "final_unet_loss": round(loss, 4),
            "date": time.strftime("%Y-%m-%d"),
        }
        save_pipeline_atomic(pipe, out, overwrite=overwrite, report=report)
    return pipe

