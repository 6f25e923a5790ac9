"""Argument checks the whole kit shares, so a bad number gets the same clear message everywhere."""

from __future__ import annotations

import numbers


def require_whole(name: str, value: object, minimum: int = 1, hint: str = "") -> None:
    """Raise ValueError unless `value` is a whole number >= minimum (bools are not numbers here)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}" + (f" ({hint})" if hint else ""))
