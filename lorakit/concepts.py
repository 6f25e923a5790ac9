"""The two concept adapters the kit ships (data/adapters/): the held-out colour and the held-out style.

Notebook 05 mixes them; `python -m lorakit train-adapters` rebuilds them (about 1.5 minutes on a
laptop CPU). Each is a stock diffusers LoRA file (`lorakit.adapters.save_adapter`): rank 4, alpha 8
(scale 2, so that code which forgets alpha shows it), on the UNet's and the text encoder's attention.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from lorakit.arguments import require_whole
from lorakit.adapters import add_adapter, save_adapter
from lorakit.data import ShapesDataset, concat_datasets, make_dataset
from lorakit.evaluation import score_prompts
from lorakit.diffusion import TrainConfig
from lorakit.finetune import train
from lorakit.seeds import ADAPTER_CHECK_SEED
from lorakit.paths import DATA_DIR, atomic_folder, atomic_path, check_output_folder, swap_in

ADAPTERS_DIR = DATA_DIR / "adapters"
CONCEPTS = ("orange", "striped")  # one held-out colour, one held-out style
RANK, ALPHA = 4, 8.0
_REBUILD_HINT = "rebuild them with `python -m lorakit train-adapters` (about 1.5 minutes on a laptop CPU)"


def adapter_path(concept: str) -> Path:
    """The shipped adapter file for a concept; a clear error if it is unknown or missing."""
    if concept not in CONCEPTS:
        raise ValueError(f"no shipped adapter for {concept!r}; the kit ships {list(CONCEPTS)}")
    path = ADAPTERS_DIR / f"{concept}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"adapter file {path} is missing; {_REBUILD_HINT}")
    return path


def concept_data(concept: str, n: int = 256, seed: int = 1) -> ShapesDataset:
    """n images showing the concept plus n ordinary pre-training images (so the rest is not forgotten)."""
    return concat_datasets(make_dataset(n, seed=seed, include=[concept]), make_dataset(n, seed=seed + 1))


def train_concept_adapter(
    pipe: StableDiffusionPipeline, concept: str, steps: int = 250, lr: float = 1.5e-3, seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Add an adapter named after the concept to `pipe` and train it (notebook 02's recipe); returns the losses.

    lr 1.5e-3 at scale 2 moves ΔW = 2·BA as fast as notebook 02's 3e-3 at scale 1.
    """
    add_adapter(pipe, rank=RANK, alpha=ALPHA, name=concept, seed=seed)
    return train(pipe, concept_data(concept), TrainConfig(steps=steps, lr=lr, seed=seed), progress=progress)


def _is_adapters_folder(path: Path) -> bool:
    return {p.name for p in path.iterdir()} <= {f"{c}.safetensors" for c in CONCEPTS} | {"training_report.json"}


def train_adapters(out: str | Path, steps: int = 250, seed: int = 0, device: str | torch.device | None = None,
                   overwrite: bool = False) -> dict[str, dict]:
    """Train every concept adapter and write them, with a report, into the folder `out` (atomically).

    `out` must be new or empty, or (with `overwrite`) a folder of these adapters; the folder is
    filled beside `out` and swapped in once every adapter is written.
    """
    from lorakit.pipeline import load_pipeline

    out = Path(out)
    check_output_folder(out, _is_adapters_folder, "folder of concept adapters", overwrite, flag="--overwrite (overwrite=True)")
    require_whole("steps", steps)
    report = {}
    with atomic_folder(out) as tmp:
        for concept in CONCEPTS:
            start = time.perf_counter()
            pipe = load_pipeline(device=device)
            losses = train_concept_adapter(pipe, concept, steps=steps, seed=seed)
            seconds = time.perf_counter() - start
            prompts = [f"a {s} {concept} {shape}" if concept != "striped" else f"a {s} red {concept} {shape}"
                       for s in ("small", "large") for shape in ("circle", "square", "triangle")]
            group = "style" if concept == "striped" else "colour"
            accuracy = score_prompts(pipe, prompts, n_per_prompt=8, seed=ADAPTER_CHECK_SEED).accuracy[group]
            path = save_adapter(pipe, tmp / f"{concept}.safetensors", name=concept)
            report[concept] = {"steps": steps, "seconds": round(seconds, 1), "final_loss": round(losses[-1], 4),
                               f"{group}_accuracy": accuracy, "bytes": path.stat().st_size}
            print(f"{concept}: {seconds:.0f} s, {group} accuracy {accuracy:.2f}")
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

