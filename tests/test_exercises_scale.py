"""Notebook 09's exercise: each typical mistake gets its own hint (every reference passing, every stub
"not written yet" and the reference handed on: tests/test_exercises.py)."""

import pytest

from lorakit.exercises import scale as ex


def test_the_reference_gives_the_count_a_real_sd15_lora_holds():
    assert ex.reference_attention_lora_parameters(4, [320, 640, 1280], [5, 5, 6], 768) == 797_184


def _per_block(f):
    return lambda r, channels, blocks, text: sum(n * f(r, c, text) for c, n in zip(channels, blocks))


@pytest.mark.parametrize("answer, hint", [
    (_per_block(lambda r, c, t: 8 * r * 2 * c), "text_dim wide"),
    (_per_block(lambda r, c, t: 4 * r * 2 * c), "two attentions"),
    (_per_block(lambda r, c, t: 6 * r * c * c + 2 * r * t * c), "multiplies all three sizes"),
    (_per_block(lambda r, c, t: 6 * r * c + 2 * r * t), "only one factor"),
    (lambda *a: "797184 parameters", "whole number"),
    (lambda *a: 797_184, "expected"),  # right for SD 1.5 only: the other cases catch a typed-in number
])
def test_each_mistake_gets_its_hint(answer, hint, capsys):
    assert ex.check_attention_lora_parameters(answer) is False
    assert hint in capsys.readouterr().out


def test_a_float_count_is_accepted(capsys):
    assert ex.check_attention_lora_parameters(lambda *a: float(ex.reference_attention_lora_parameters(*a)))
    assert "[OK]" in capsys.readouterr().out
