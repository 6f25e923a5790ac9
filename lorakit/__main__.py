"""Command line: `python -m lorakit train-classifier`, `... pretrain` and `... train-adapters`."""

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


def _train_adapters(args: argparse.Namespace) -> None:
    from lorakit.adapters import save_adapter
    from lorakit.concepts import ADAPTERS_DIR, CONCEPTS, train_concept_adapter, write_report
    from lorakit.metrics import attribute_accuracy
    from lorakit.pipeline import generate, load_pipeline

    report = {}
    for concept in CONCEPTS:
        start = time.perf_counter()
        pipe = load_pipeline(device=args.device)
        losses = train_concept_adapter(pipe, concept, steps=args.steps, seed=args.seed)
        seconds = time.perf_counter() - start
        prompts = [f"a {s} {concept} {shape}" if concept != "striped" else f"a {s} red {concept} {shape}"
                   for s in ("small", "large") for shape in ("circle", "square", "triangle")]
        images = generate(pipe, prompts, seed=500, n_per_prompt=8)
        group = "style" if concept == "striped" else "colour"
        accuracy = attribute_accuracy(images, [p for p in prompts for _ in range(8)])[group]
        path = save_adapter(pipe, ADAPTERS_DIR / f"{concept}.safetensors", name=concept)
        report[concept] = {"steps": args.steps, "seconds": round(seconds, 1), "final_loss": round(losses[-1], 4),
                           f"{group}_accuracy": accuracy, "bytes": path.stat().st_size}
        print(f"{concept}: {seconds:.0f} s, {group} accuracy {accuracy:.2f}, saved {path}")
    write_report(report)


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

    ada = sub.add_parser("train-adapters", help="train the concept adapters notebook 05 mixes (data/adapters)")
    ada.add_argument("--steps", type=int, default=250)
    ada.add_argument("--seed", type=int, default=0)
    ada.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    ada.set_defaults(func=_train_adapters)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
