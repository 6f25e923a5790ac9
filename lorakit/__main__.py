"""Command line: `python -m lorakit train-classifier`, `... pretrain`, `... train-adapters`, `... student` and
`... readme`.

The training commands write under runs/ by default (`student` writes student/) and never replaces what is there without --overwrite;
relative paths start at the repository root, whatever the current directory. Replacing a shipped
model in data/ takes an explicit --out data/... plus --overwrite (the old one is kept in runs/replaced/).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from lorakit.paths import REPO_ROOT, RUNS_DIR, base_checkpoint_dir, concept_adapters_dir, repo_path


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= minimum, or a usage error that says so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _train_classifier(args: argparse.Namespace) -> None:
    from lorakit.classifier import train_classifier

    start = time.perf_counter()
    _, table = train_classifier(out=args.out, n_train=args.n_train, steps=args.steps, object_steps=args.object_steps,
                                seed=args.seed, device=args.device, overwrite=args.overwrite)
    print(f"saved {args.out} in {time.perf_counter() - start:.0f} s; held-out accuracy:")
    for name, value in table.items():
        print(f"  {name:16s} {value:.4f}")


def _pretrain(args: argparse.Namespace) -> None:
    from lorakit.pretrain import PretrainConfig, pretrain

    overrides = {f.name: getattr(args, f.name) for f in fields(PretrainConfig) if getattr(args, f.name, None) is not None}
    cfg = PretrainConfig(**overrides)
    start = time.perf_counter()
    pretrain(out=args.out, config=cfg, work_dir=args.work_dir, resume=args.resume, device=args.device,
             overwrite=args.overwrite)
    print(f"saved the pipeline to {args.out} in {time.perf_counter() - start:.0f} s")


def _train_adapters(args: argparse.Namespace) -> None:
    from lorakit.concepts import train_adapters

    seeds = {"seeds": args.seeds} if args.seeds else {}  # default: the shipped seeds, lorakit.concepts.SEEDS
    train_adapters(args.out, steps=args.steps, device=args.device, overwrite=args.overwrite, **seeds)


def _readme(args: argparse.Namespace) -> None:
    from lorakit.report import README, record_quick_times, update_notebooks, update_readme
    from lorakit.results import results_path

    if args.record_quick:
        recorded = record_quick_times(results_path("any", quick=True).parent)
        print(f"recorded the quick-mode run times of {len(recorded)} notebooks")
    stale = update_readme(check=args.check)
    headers = update_notebooks(check=args.check)
    if args.check and (stale or headers):
        raise SystemExit(f"error: generated blocks disagree with notebooks/results/ (README.md: {stale}; notebooks' "
                         f"at-a-glance: {headers}); run `python -m lorakit readme` (make readme) after the "
                         "full-mode notebooks")
    print(f"{README.name}: " + (f"rewrote {stale}" if stale and not args.check else "every generated block is up to date"))
    print("notebooks' at-a-glance blocks: " + (f"rewrote {headers}" if headers and not args.check else "up to date"))


def _student(args: argparse.Namespace) -> None:
    from lorakit.editions import write_student_edition

    notebooks = sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for path, what in write_student_edition(notebooks, args.out, overwrite=args.overwrite).items():
        print(f"{what:7s} {path}" + (" (yours: kept; --overwrite replaces it, keeping a copy in runs/replaced/)"
                                     if what == "kept" else ""))


def _shown(path: Path) -> str:
    """A default path as the help shows it: from the repository root when it lies inside (LORAKIT_RUNS may move runs/)."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _common(parser: argparse.ArgumentParser, out: Path, what: str) -> None:
    parser.add_argument("--out", type=repo_path, default=out,
                        help=f"where to write the {what} (default: {_shown(out)}; "
                             "relative paths start at the repository root)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace an existing {what} at --out (needed to replace the shipped one in data/, "
                             "which is then kept in runs/replaced/)")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: three training commands, each with safe defaults under runs/, `student` and `readme`."""
    parser = argparse.ArgumentParser(prog="python -m lorakit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    clf = sub.add_parser("train-classifier", help="train the attribute classifier (shipped: data/classifier.safetensors)")
    _common(clf, RUNS_DIR / "classifier.safetensors", "classifier file")
    clf.add_argument("--steps", type=_positive_int, default=1500, help="attribute training steps (default: 1500)")
    clf.add_argument("--n-train", dest="n_train", type=_positive_int, default=24_000,
                     help="rendered training images (default: 24000)")
    clf.add_argument("--object-steps", dest="object_steps", type=_positive_int, default=1200,
                     help="training steps of the object network, which tells one object from none (default: 1200)")
    clf.add_argument("--seed", type=_non_negative_int, default=0)
    clf.set_defaults(func=_train_classifier)

    pre = sub.add_parser("pretrain", help="pre-train the tiny Stable Diffusion pipeline (shipped: data/tiny-sd)")
    _common(pre, RUNS_DIR / "tiny-sd", "pipeline folder")
    pre.add_argument("--work-dir", type=repo_path, default=RUNS_DIR / "pretrain",
                     help="where checkpoints go (default: runs/pretrain)")
    pre.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work-dir")
    pre.add_argument("--vae-steps", dest="vae_steps", type=_positive_int)
    pre.add_argument("--steps", dest="unet_steps", type=_positive_int, help="text encoder + UNet steps")
    pre.add_argument("--batch-size", dest="batch_size", type=_positive_int)
    pre.add_argument("--lr", type=_positive_float)
    pre.add_argument("--vae-lr", dest="vae_lr", type=_positive_float)
    pre.add_argument("--n-images", dest="n_images", type=_positive_int)
    pre.add_argument("--checkpoint-every", dest="checkpoint_every", type=_non_negative_int, help="0: no checkpoints")
    pre.add_argument("--eval-every", dest="eval_every", type=_non_negative_int, help="print attribute accuracy every N steps")
    pre.add_argument("--seed", type=_non_negative_int)
    pre.set_defaults(func=_pretrain)

    ada = sub.add_parser("train-adapters", help="train the concept adapters notebook 05 mixes (shipped: data/adapters; "
                                                "with LORAKIT_BASE set, --out defaults to runs/adapters-<its folder name>)")
    try:  # runs/adapters for the tiny model; with LORAKIT_BASE set, the folder notebook 05 reads that model's from
        adapters_out = RUNS_DIR / "adapters" if base_checkpoint_dir() is None else concept_adapters_dir()
    except FileNotFoundError:  # a wrong LORAKIT_BASE stops train-adapters when it loads the model, not every command
        adapters_out = RUNS_DIR / "adapters"
    _common(ada, adapters_out, "folder of concept adapters")
    ada.add_argument("--steps", type=_positive_int, default=250)
    ada.add_argument("--seeds", type=_non_negative_int, nargs="+",
                     help="one training run per seed, trained together (shipped: 0 1 2 3 4; seed 0 is <concept>.safetensors)")
    ada.set_defaults(func=_train_adapters)

    student = sub.add_parser("student", help="write the student edition of every notebook (solutions stubbed)")
    student.add_argument("--out", type=repo_path, default=REPO_ROOT / "student",
                         help="folder for the student notebooks (default: student/)")
    student.add_argument("--overwrite", action="store_true",
                         help="replace student notebooks that exist (your work there is copied to runs/replaced/ first)")
    student.set_defaults(func=_student)

    readme = sub.add_parser("readme", help="rewrite README.md's result tables and the notebooks' at-a-glance blocks "
                                           "from notebooks/results/")
    readme.add_argument("--check", action="store_true", help="only check; exit 1 if a block is out of date")
    readme.add_argument("--record-quick", action="store_true",
                        help="first record each notebook's quick-mode run time from runs/quick-results/ (after a "
                             "quick-mode run of the notebooks) into notebooks/results/quick/")
    readme.set_defaults(func=_readme)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m lorakit` (and the `lorakit` script)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, FloatingPointError,
            IsADirectoryError, NotADirectoryError) as err:
        parser.exit(2, f"{parser.prog} {args.command}: error: {err}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
