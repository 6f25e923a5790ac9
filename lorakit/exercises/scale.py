"""Notebook 09's exercise: a rank-r attention LoRA's parameter count on SD 1.5, from its published layer widths."""

from __future__ import annotations

from typing import Callable, Sequence

from lorakit.check import never_raises, report
from lorakit.sd15 import attention_lora_parameters

# (rank, channels, transformer blocks per width, text width): SD 1.5's, the tiny model's and a made-up UNet
CASES = [(4, (320, 640, 1280), (5, 5, 6), 768), (16, (320, 640, 1280), (5, 5, 6), 768),
         (4, (48, 96), (3, 4), 64), (2, (8, 16, 32), (1, 2, 3), 12)]


def reference_attention_lora_parameters(rank: int, channels: Sequence[int], blocks: Sequence[int], text_dim: int) -> int:
    """The reference answer: `lorakit.sd15.attention_lora_parameters`."""
    return attention_lora_parameters(rank, tuple(channels), tuple(blocks), text_dim)


def _variants(rank: int, channels: Sequence[int], blocks: Sequence[int], text_dim: int) -> dict[str, int]:
    """What the typical mistakes compute, each with the hint that names it."""
    per = lambda f: sum(n * f(c) for c, n in zip(channels, blocks))  # noqa: E731
    return {
        "cross-attention's k and v read the text encoder's output, text_dim wide, not C: they are (C x text_dim) "
        "layers, A (r × text_dim) and B (C × r)": per(lambda c: 8 * rank * 2 * c),
        "each transformer block has two attentions, self (attn1) and cross (attn2), each with q, k, v and out":
            per(lambda c: 4 * rank * 2 * c),
        "r · out · in multiplies all three sizes; a LoRA on an (out, in) layer stores B (out × r) and A (r × in): "
        "r · (out + in)": per(lambda c: 6 * rank * c * c + 2 * rank * text_dim * c),
        "only one factor is counted: each layer has A (r × in) and B (out × r)": per(lambda c: 6 * rank * c + 2 * rank * text_dim),
    }


@never_raises
def check_attention_lora_parameters(count_fn: Callable[[int, Sequence[int], Sequence[int], int], int]) -> bool:
    """Check a learner's attention_lora_parameters(rank, channels, blocks, text_dim) -> parameter count."""
    for rank, channels, blocks, text_dim in CASES:
        answer = count_fn(rank, list(channels), list(blocks), text_dim)
        try:
            got = int(answer) if float(answer).is_integer() else None
        except (TypeError, ValueError):
            got = None
        if got is None:
            return report(False, f"return a whole number of parameters, got {answer!r}")
        want = reference_attention_lora_parameters(rank, channels, blocks, text_dim)
        if got != want:
            for hint, wrong in _variants(rank, channels, blocks, text_dim).items():
                if got == wrong:
                    return report(False, hint)
            return report(False, f"rank {rank}, channels {list(channels)}, blocks {list(blocks)}, text width {text_dim}: "
                                 f"got {got:,}, expected {want:,} = Σ blocks · (self-attention 4 · r · 2C + cross-attention "
                                 "2 · r · 2C + 2 · r · (text_dim + C))")
    return report(True, f"SD 1.5's rank-4 attention LoRA: {reference_attention_lora_parameters(*CASES[0]):,} parameters, "
                        "computed from its shapes alone")
