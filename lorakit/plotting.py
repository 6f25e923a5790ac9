"""Plots the notebooks share: image grids with captions, and a judge audit's images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lorakit.data import as_uint8

if TYPE_CHECKING:
    from lorakit.audit import JudgeAudit


def show_grid(
    images,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    scale: float = 1.1,
    suptitle: str | None = None,
) -> Figure:
    """Show a batch of images in a grid, optionally one small title per image; returns the figure."""
    pixels = as_uint8(images).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    n = len(pixels)
    if n == 0:
        raise ValueError("no images to show (the batch is empty)")
    if isinstance(titles, str):
        raise TypeError(f"titles must be a list with one title per image; got the string {titles!r} "
                        "(for one heading over the grid use suptitle=)")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows * (1.25 if titles else 1.0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pixels[i], interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def show_audit(audit: JudgeAudit, n: int) -> list[Figure]:
    """Show a judge audit's first n disagreements, then its first n images with no recognisable shape."""
    unreadable = sum(len(v) for v in audit.unreadable.values())
    figures = []
    for (images, titles), total, what in ((audit.disagreement_images(n), len(audit.disagreements), "where the judges disagree"),
                                          (audit.unreadable_images(n), unreadable, "no recognisable shape (the judge's reading)")):
        if titles:
            figures.append(show_grid(images, titles, ncols=8, scale=1.2,
                                     suptitle=f"{what}: the first {len(titles)} of {total}"))
            plt.show()
    return figures
