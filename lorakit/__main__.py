"""Command line: `python -m lorakit train-classifier` and `python -m lorakit pretrain`."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from lorakit.paths import CLASSIFIER_PATH, PIPELINE_DIR


def _train_classifier(args: argparse.Namespace) -> None:
    from lorakit.classifier import train_classifier

    start = time.perf_counter()
    _, table = train_classifier(out=args.out, steps=args.steps, seed=args.seed, device=args.device)
    print(f"saved {args.out} in {time.perf_counter() - start:.0f} s; held-out accuracy:")
    for name, value in table.items():
        print(f"  {name:16s} {value:.4f}")


def _pretrain(args: argparse.Namespace) -> None:
    from lorakit.pretrain import PretrainConfig, pretrain

    overrides = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if getattr(args, f.name, None) is not None}
    cfg = PretrainConfig(**overrides)
    start = time.perf_counter()
    pretrain(out=args.out, config=cfg, work_dir=args.work_dir, resume=args.resume, device=args.device)
    print(f"saved the pipeline to {args.out} in {time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m lorakit` (and the `lorakit` script)."""
    parser = argparse.ArgumentParser(prog="python -m lorakit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    clf = sub.add_parser("train-classifier", help="train the attribute classifier (data/classifier.safetensors)")
    clf.add_argument("--out", type=Path, default=CLASSIFIER_PATH)
    clf.add_argument("--steps", type=int, default=1500)
    clf.add_argument("--seed", type=int, default=0)
    clf.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    clf.set_defaults(func=_train_classifier)

    pre = sub.add_parser("pretrain", help="pre-train the tiny Stable Diffusion pipeline (data/tiny-sd)")
    pre.add_argument("--out", type=Path, default=PIPELINE_DIR)
    pre.add_argument("--work-dir", type=Path, default=Path("runs/pretrain"), help="where checkpoints go")
    pre.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work-dir")
    pre.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    pre.add_argument("--vae-steps", dest="vae_steps", type=int)
    pre.add_argument("--steps", dest="unet_steps", type=int, help="text encoder + UNet steps")
    pre.add_argument("--batch-size", dest="batch_size", type=int)
    pre.add_argument("--lr", type=float)
    pre.add_argument("--vae-lr", dest="vae_lr", type=float)
    pre.add_argument("--n-images", dest="n_images", type=int)
    pre.add_argument("--checkpoint-every", dest="checkpoint_every", type=int)
    pre.add_argument("--eval-every", dest="eval_every", type=int, help="print attribute accuracy every N steps")
    pre.add_argument("--seed", type=int)
    pre.set_defaults(func=_pretrain)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
