"""'Check your understanding' questions with instant feedback: an ipywidgets form per question.

The course's questions live in `lorakit.questions` and a notebook asks one by its key,
`ask("03.a")`, so the notebook's source does not give the answer away. Two kinds:

- multiple choice: pick an option, press "Check", read why it is right or what it misses;
- a number to predict before running a cell: type it, press "Check", see how close it is.

Without a widget frontend (a notebook viewer, a terminal) the question prints as text with its
options, and `Quiz.answer(...)` gives the same feedback from Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ipywidgets as widgets


@dataclass(frozen=True)
class Choice:
    """A multiple-choice question: `options` maps each option to its feedback; `answer` is the right option."""

    question: str
    options: dict[str, str]
    answer: str

    def __post_init__(self) -> None:
        if self.answer not in self.options:
            raise ValueError(f"the answer {self.answer!r} is not one of the options {list(self.options)}")
        if len(self.options) < 2:
            raise ValueError("a multiple-choice question needs at least two options")

    def feedback(self, picked: str) -> tuple[bool, str]:
        """(right?, what to read) for an option."""
        if picked not in self.options:
            raise ValueError(f"{picked!r} is not an option; pick one of {list(self.options)}")
        return picked == self.answer, self.options[picked]


@dataclass(frozen=True)
class Number:
    """A number to predict: right within `tolerance` (relative) of `answer`; `explain` says how to get it."""

    question: str
    answer: float
    explain: str
    tolerance: float = 0.05
    unit: str = ""
    hints: dict[str, float] = field(default_factory=dict)  # a typical wrong answer's reason -> its value

    def __post_init__(self) -> None:
        if not (math.isfinite(self.answer) and 0 <= self.tolerance < 1):
            raise ValueError("a numeric question needs a finite answer and a relative tolerance in [0, 1)")

    def feedback(self, guess: float, reveal: bool = False) -> tuple[bool, str]:
        """(right?, what to read) for a guess; `reveal` adds the answer and its explanation to a wrong guess."""
        if not math.isfinite(guess):
            return False, "type a number"
        if math.isclose(guess, self.answer, rel_tol=self.tolerance, abs_tol=1e-12):
            return True, f"{self.answer:g}{self.unit}: {self.explain}"
        reason = next((r for r, v in self.hints.items() if math.isclose(guess, v, rel_tol=self.tolerance)), None)
        text = (f"{guess:g} is what you get if {reason}." if reason else
                f"{guess:g} is too {'high' if guess > self.answer else 'low'}.")
        return False, text + (f" The answer is {self.answer:g}{self.unit}: {self.explain}" if reveal else " Try again.")


Question = Choice | Number


class Quiz:
    """One question as a form: options or a number box, a Check button, and the feedback under it."""

    def __init__(self, key: str, question: Question) -> None:
        self.key, self.question = key, question
        self.attempts: list[tuple[object, bool]] = []
        prompt = widgets.HTML(f"<b>Check your understanding ({key}).</b> {question.question}")
        if isinstance(question, Choice):
            self.input = widgets.RadioButtons(options=list(question.options), value=None,
                                              layout=widgets.Layout(width="max-content"))
        else:
            unit = f" ({question.unit.strip()})" if question.unit.strip() else ""
            self.input = widgets.Text(placeholder="a number", description=f"your answer{unit}",
                                      style={"description_width": "initial"})
        self.button = widgets.Button(description="Check", button_style="info")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self.answer(self.input.value))
        self.box = widgets.VBox([prompt, self.input, self.button, self.result])

    def answer(self, value: object) -> str:
        """Give an answer (an option, or a number); shows and returns the feedback."""
        if value is None or value == "":
            return self._show(False, "give an answer first")
        if isinstance(self.question, Choice):
            right, text = self.question.feedback(str(value))
        else:
            try:
                guess = float(str(value).replace(",", ""))
            except ValueError:
                return self._show(False, f"{value!r} is not a number")
            wrong_before = sum(not ok for _, ok in self.attempts)
            right, text = self.question.feedback(guess, reveal=wrong_before >= 2)  # the third miss shows the answer
        self.attempts.append((value, right))
        return self._show(right, text)

    def _show(self, right: bool, text: str) -> str:
        colour = "green" if right else "#b35900"
        self.result.value = f"<span style='color:{colour}'>{'Right' if right else 'Not quite'}.</span> {text}"
        return ("Right. " if right else "Not quite. ") + text

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = self.box._repr_mimebundle_(**kwargs)  # the form; viewers without widgets show the text below
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        lines = [f"Check your understanding ({self.key}). {self.question.question}"]
        if isinstance(self.question, Choice):
            lines += [f"  ( ) {option}" for option in self.question.options]
        else:
            lines.append(f"  your answer: ____{self.question.unit}")
        lines.append("(open the notebook in JupyterLab to answer and get feedback)")
        return "\n".join(lines)

