"""The two concept adapters the kit ships (data/adapters/): the held-out colour and the held-out style.

Notebook 05 mixes them; `python -m lorakit train-adapters` rebuilds them (about 5 minutes on a
laptop CPU). Each is a stock diffusers LoRA file (`lorakit.adapters.save_adapter`): rank 4, alpha 8
(scale 2, so that code which forgets alpha shows it), on the UNet's and the text encoder's attention.
Each concept ships five training runs of one recipe, seeds 0-4 (`<concept>.safetensors` is seed 0,
`<concept>-seed<s>.safetensors` the others), so a verdict about mixing can say how much it owes to one run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Sequence

import torch

from lorakit.arguments import require_whole
from lorakit.adapters import add_adapter, save_adapter
from lorakit.data import ShapesDataset, concat_datasets, make_dataset
from lorakit.evaluation import score_prompts
from lorakit.diffusion import TrainConfig
from lorakit.seeds import ADAPTER_CHECK_SEED
from lorakit.stacked import train_stacked
from lorakit.paths import (
    ADAPTERS_DIR,
    atomic_folder,
    atomic_path,
    base_checkpoint_dir,
    check_output_folder,
    concept_adapters_dir,
    swap_in,
)

CONCEPTS = ("orange", "striped")  # one held-out colour, one held-out style
RANK, ALPHA = 4, 8.0
LR = 1.5e-3  # at scale 2 this moves ΔW = 2·BA as fast as notebook 02's 3e-3 at scale 1
SEEDS = (0, 1, 2, 3, 4)  # the training runs shipped per concept
_REBUILD_HINT = "rebuild them with `python -m lorakit train-adapters` (about 5 minutes on a laptop CPU)"


def adapter_file_name(concept: str, seed: int = 0) -> str:
    """The file name of one training run of a concept's adapter: seed 0 is the plain `<concept>.safetensors`."""
    return f"{concept}.safetensors" if seed == 0 else f"{concept}-seed{seed}.safetensors"


def adapter_path(concept: str, seed: int = 0) -> Path:
    """A concept's adapter file (one of its training runs, `SEEDS`) for the chapters' base model; a clear error if
    unknown or missing. The tiny model's are shipped; a LORAKIT_BASE model's are trained once (`concept_adapters_dir`)."""
    if concept not in CONCEPTS:
        raise ValueError(f"no shipped adapter for {concept!r}; the kit ships {list(CONCEPTS)}")
    if seed not in SEEDS:
        raise ValueError(f"no shipped training run with seed {seed!r}; the kit ships seeds {list(SEEDS)}")
    path = concept_adapters_dir() / adapter_file_name(concept, seed)
    if not path.is_file():
        base = base_checkpoint_dir()
        hint = _REBUILD_HINT if base is None else (
            f"the concept adapters of {base} are trained once, with LORAKIT_BASE set: `python -m lorakit train-adapters` "
            f"writes them to {path.parent}")
        raise FileNotFoundError(f"adapter file {path} is missing; {hint}")
    return path


def concept_data(concept: str, n: int = 256, seed: int = 1) -> ShapesDataset:
    """n images showing the concept plus n ordinary pre-training images (so the rest is not forgotten)."""
    return concat_datasets(make_dataset(n, seed=seed, include=[concept]), make_dataset(n, seed=seed + 1))


def _is_adapters_folder(path: Path) -> bool:
    return all(p.name == "training_report.json" or re.fullmatch(rf"({'|'.join(CONCEPTS)})(-seed\d+)?\.safetensors", p.name)
               for p in path.iterdir())


def train_adapters(out: str | Path, steps: int = 250, seeds: Sequence[int] = SEEDS,
                   device: str | torch.device | None = None, overwrite: bool = False) -> dict[str, dict]:
    """Train every concept adapter once per seed and write them, with a report, into the folder `out` (atomically).

    The recipe is notebook 02's: an adapter (rank 4, alpha 8, `add_adapter`) on `concept_data`, trained for
    `steps` at `LR`; a concept's seeds train together (`lorakit.stacked`), each as `lorakit.finetune.train`
    would train it alone. `out` must be new or empty, or (with `overwrite`) a folder of these adapters; the
    folder is filled beside `out` and swapped in once every adapter is written.
    """
    from lorakit.pipeline import load_pipeline

    out = Path(out)
    require_whole("steps", steps)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) and x >= 0 for x in seeds):
        raise ValueError(f"seeds must be distinct whole numbers >= 0, e.g. (0, 1, 2, 3, 4); got {seeds!r}")
    check_output_folder(out, _is_adapters_folder, "folder of concept adapters", overwrite, flag="--overwrite (overwrite=True)")
    report = {}
    with atomic_folder(out) as tmp:
        for concept in CONCEPTS:
            start = time.perf_counter()
            pipes = [load_pipeline(device=device) for _ in seeds]
            for pipe, s in zip(pipes, seeds):
                add_adapter(pipe, rank=RANK, alpha=ALPHA, seed=s)
            losses = train_stacked(pipes, concept_data(concept), [TrainConfig(steps=steps, lr=LR, seed=s) for s in seeds],
                                   progress=True)
            seconds = time.perf_counter() - start
            prompts = [f"a {s} {concept} {shape}" if concept != "striped" else f"a {s} red {concept} {shape}"
                       for s in ("small", "large") for shape in ("circle", "square", "triangle")]
            group = "style" if concept == "striped" else "colour"
            report[concept] = {"steps": steps, "seconds": round(seconds, 1), "seeds": {}}
            for pipe, s, loss in zip(pipes, seeds, losses):
                accuracy = score_prompts(pipe, prompts, n_per_prompt=8, seed=ADAPTER_CHECK_SEED).accuracy[group]
                path = save_adapter(pipe, tmp / adapter_file_name(concept, s))
                report[concept]["seeds"][str(s)] = {"final_loss": round(loss[-1], 4), f"{group}_accuracy": accuracy,
                                                    "bytes": path.stat().st_size}
            print(f"{concept}: {len(seeds)} seeds in {seconds:.0f} s, {group} accuracy "
                  + ", ".join(f"{r[f'{group}_accuracy']:.2f}" for r in report[concept]["seeds"].values()))
        write_report(report, tmp / "training_report.json")
        kept = swap_in(tmp, out)
    print(f"saved {', '.join(CONCEPTS)} adapters to {out}" + (f"; the previous ones are kept at {kept}" if kept else ""))
    return report


def write_report(report: dict, path: Path | None = None) -> Path:
    """Save what training the adapters measured next to them (training_report.json)."""
    path = path or ADAPTERS_DIR / "training_report.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path


