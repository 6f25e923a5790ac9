"""The set-up check that notebook 00 prints: versions, device, shipped files, offline mode."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

from lorakit.devices import device
from lorakit.paths import CLASSIFIER_PATH, PIPELINE_DIR

# package -> oldest version the kit is tested against (pyproject.toml has the same floors)
REQUIREMENTS = {
    "torch": "2.2",
    "diffusers": "0.32",
    "transformers": "4.45",
    "peft": "0.14",
    "safetensors": "0.4",
    "matplotlib": "3.7",
    "ipywidgets": "8",
    "tqdm": "4.66",
}


@dataclass
class Check:
    """One line of the check: what, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for piece in v.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def environment_checks() -> list[Check]:
    """Check Python, each required package's version, the device, the shipped files and offline mode."""
    checks = [Check("python", sys.version_info >= (3, 10), sys.version.split()[0] + " (need >= 3.10)")]
    for name, floor in REQUIREMENTS.items():
        try:
            version = importlib.import_module(name).__version__
        except ImportError:
            checks.append(Check(name, False, "not installed: run `make lab` (or pip install -e .)"))
            continue
        checks.append(Check(name, _version_tuple(version) >= _version_tuple(floor), f"{version} (need >= {floor})"))
    checks.append(Check("device", True, str(device())))
    checks.append(Check("classifier weights", CLASSIFIER_PATH.is_file(), str(CLASSIFIER_PATH.relative_to(CLASSIFIER_PATH.parents[1]))))
    checks.append(Check("tiny-sd pipeline", (PIPELINE_DIR / "model_index.json").is_file(), str(PIPELINE_DIR.relative_to(PIPELINE_DIR.parents[1]))))
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    checks.append(Check("offline", True, "HF_HUB_OFFLINE=1" if offline else "HF_HUB_OFFLINE not set (the kit never downloads anyway)"))
    return checks
