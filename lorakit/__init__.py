"""lorakit: LoRA for Stable-Diffusion-style models, taught on a tiny pipeline that runs on a CPU.

The names most notebooks need are importable from here; each lives in a small module named for
what it holds (data, classifier, metrics, tokenizer, pipeline, pretrain, evaluation, plotting).
"""

from lorakit.classifier import features, load_classifier, predict_words
from lorakit.config import CFG
from lorakit.data import HELD_OUT, HELD_OUT_WORDS, few_shot_instance, make_dataset
from lorakit.devices import device
from lorakit.pipeline import generate, load_pipeline
from lorakit.plotting import show_grid

__version__ = "0.1.0"

__all__ = [
    "CFG",
    "HELD_OUT",
    "HELD_OUT_WORDS",
    "device",
    "features",
    "few_shot_instance",
    "generate",
    "load_classifier",
    "load_pipeline",
    "make_dataset",
    "predict_words",
    "show_grid",
]
