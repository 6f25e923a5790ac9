"""One switch between full mode (the lesson's real numbers) and quick mode (CI: seconds).

Set ``LORAKIT_QUICK=1`` in the environment for quick mode. Notebooks and CLIs read sizes through
``CFG.pick(full=..., quick=...)`` so that they read the same in both modes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RunConfig:
    """Which mode this process runs in; `pick` chooses a size for that mode."""

    quick: bool

    def pick(self, full: T, quick: T) -> T:
        """The full-mode value, or the quick-mode one when LORAKIT_QUICK=1."""
        return quick if self.quick else full

    @property
    def mode(self) -> str:
        """'quick' or 'full', for printing at the top of a notebook."""
        return "quick" if self.quick else "full"


def _quick_from_env() -> bool:
    value = os.environ.get("LORAKIT_QUICK", "0").strip().lower()
    return value in ("1", "true", "yes", "on")


CFG = RunConfig(quick=_quick_from_env())
