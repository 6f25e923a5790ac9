"""Interactive views for the notebooks: thin ipywidgets wrappers around tested lorakit functions.

Each builder returns the widget box and keeps its state on attributes, so tests can set values
from Python and check what was drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from diffusers import StableDiffusionPipeline
from IPython.display import display

from lorakit.adapters import load_adapter_weights
from lorakit.collapse import CollapseProbe
from lorakit.interpolation import DEFAULT_TS, BlendStudy
from lorakit.plotting import show_grid


class CheckpointExplorer:
    """Scrub through an adapter's saved checkpoints and its inference scale; shows samples and metrics.

    Images for a (step, scale) pair are generated once and cached, so moving back is instant.
    """

    def __init__(self, pipe: StableDiffusionPipeline, checkpoints: dict[int, Path], probe: CollapseProbe,
                 n: int = 8, adapter: str = "default") -> None:
        if not checkpoints:
            raise ValueError("no checkpoints to explore: train with checkpoint_dir set")
        self.pipe, self.checkpoints, self.probe, self.n, self.adapter = pipe, checkpoints, probe, n, adapter
        self.cache: dict[tuple[int, float], tuple[torch.Tensor, dict[str, float]]] = {}
        steps = list(checkpoints)
        self.step = widgets.SelectionSlider(options=steps, value=steps[-1], description="step",
                                            continuous_update=False)
        self.scale = widgets.FloatSlider(value=1.0, min=0.0, max=1.5, step=0.25, description="adapter scale",
                                         continuous_update=False, style={"description_width": "initial"})
        self.output = widgets.interactive_output(self.show, {"step": self.step, "scale": self.scale})
        self.box = widgets.VBox([widgets.HBox([self.step, self.scale]), self.output])

    def images(self, step: int, scale: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Samples (token prompt, then each edited prompt) and metrics for a checkpoint at an adapter scale."""
        key = (step, float(scale))
        if key not in self.cache:
            load_adapter_weights(self.pipe, self.checkpoints[step], self.adapter)
            self.pipe.set_adapters([self.adapter], adapter_weights=[float(scale)])
            token = self.probe.group_samples(self.pipe, "token", n_per_prompt=self.n)
            edits = [self.probe.group_samples(self.pipe, g, n_per_prompt=1) for g in ("edit", "plain")]
            self.cache[key] = (torch.cat([token, *edits]), self.probe.token_scores(token))
        return self.cache[key]

    def show(self, step: int, scale: float) -> None:
        """Draw the grid for one (step, scale); called by the sliders."""
        images, m = self.images(step, scale)
        titles = [self.probe.token_prompt] * self.n + self.probe.edit_prompts + [self.probe.class_prompt]
        fig = show_grid(images, titles, ncols=self.n, scale=1.2,
                        suptitle=f"step {step}, scale {scale:.2f}: fidelity {m['fidelity']:.2f}, "
                                 f"diversity (judge Vendi, valid objects) {m['diversity']:.2f}, nearest-training distance {m['nn_distance']:.3f}")
        display(fig)
        plt.close(fig)


class ScaleExplorer:
    """One adapter's scale from -1 to 2 (set through `pipe.set_adapters`): live samples and concept probability."""

    def __init__(self, study: BlendStudy, adapter: str, n: int = 8) -> None:
        if adapter not in (study.mixer.a, study.mixer.b):
            raise ValueError(f"unknown adapter {adapter!r}; the study mixes {study.mixer.a!r} and {study.mixer.b!r}")
        self.study, self.adapter, self.n = study, adapter, n
        self.scale = widgets.FloatSlider(value=1.0, min=-1.0, max=2.0, step=0.25, description=f"{adapter} scale",
                                         continuous_update=False, style={"description_width": "initial"})
        self.output = widgets.interactive_output(self.show, {"scale": self.scale})
        self.box = widgets.VBox([self.scale, self.output])

    def show(self, scale: float) -> None:
        """Draw the samples at one scale; called by the slider."""
        images = self.study.single_images(self.adapter, scale, n=self.n)
        p_a, p_b = self.study.probabilities(images)
        word = self.study.concepts[0 if self.adapter == self.study.mixer.a else 1][1]
        p = p_a if self.adapter == self.study.mixer.a else p_b
        fig = show_grid(images, ncols=self.n, scale=1.1,
                        suptitle=f"'{self.study.prompt}' with {self.adapter} at scale {scale:+.2f}: P({word}) = {p:.2f}")
        display(fig)
        plt.close(fig)


class BlendExplorer:
    """Blend slider t, method dropdown and seed box: the samples at t, and the measures along the whole path."""

    def __init__(self, study: BlendStudy, methods: Sequence[str], n: int = 8) -> None:
        self.study, self.n = study, n
        self.method = widgets.Dropdown(options=list(methods), value=methods[0], description="method")
        self.t = widgets.SelectionSlider(options=list(DEFAULT_TS), value=0.5, description="t",
                                         continuous_update=False)
        self.seed = widgets.BoundedIntText(value=study.seed, min=0, max=10**6, description="seed")
        self.calls: list[tuple[str, float, int]] = []
        self.output = widgets.interactive_output(self.show, {"method": self.method, "t": self.t, "seed": self.seed})
        self.box = widgets.VBox([widgets.HBox([self.method, self.t, self.seed]), self.output])

    def show(self, method: str, t: float, seed: int) -> None:
        """Draw the samples for (method, t, seed) and the path's measures with a marker at t."""
        self.calls.append((method, t, seed))
        # at the study's seed the path's own samples are reused; another seed draws just n new ones
        images = self.study.images(method, t, seed=seed, n=None if seed == self.study.seed else self.n)[: self.n]
        path = self.study.path(method)
        a, b = (c[1] for c in self.study.concepts)
        fig = plt.figure(figsize=(11, 3.6))
        grid = fig.add_gridspec(2, self.n + 6)
        for i in range(len(images)):  # the study may hold fewer samples per point than the widget shows
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.axis("off")
        fig.text(0.02, 0.95, f"{method}, t = {t:.1f}, seed {seed}: '{self.study.prompt}'", fontsize=9)
        ax = fig.add_subplot(grid[1, : self.n // 2 + 2])
        ax.plot(path.ts, path.p_a, "o-", label=f"P({a})")
        ax.plot(path.ts, path.p_b, "s-", label=f"P({b})")
        ax.plot(path.ts, path.confidence, "^-", label="confidence")
        ax.axvline(t, c="k", ls=":")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("t")
        ax.legend(fontsize=6, loc="center left")
        ax = fig.add_subplot(grid[1, self.n // 2 + 3 :])
        ax.plot(path.ts, path.diversity, "o-", c="tab:purple", label="diversity (Vendi, judge features, valid objects)")
        ax.axvline(t, c="k", ls=":")
        ax.set_xlabel("t")
        ax.legend(fontsize=6)
        display(fig)
        plt.close(fig)
