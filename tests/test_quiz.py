"""The 'check your understanding' questions: every answer is right by its own feedback, wrong picks explain
themselves, numbers name the typical wrong answers, and the form works from Python."""

import pytest

from lorakit.questions import QUESTIONS, ask
from lorakit.quiz import Choice, Number, Quiz


@pytest.mark.parametrize("key", list(QUESTIONS))
def test_every_question_accepts_its_answer_and_explains_every_other_option(key):
    q = QUESTIONS[key]
    if isinstance(q, Choice):
        assert q.feedback(q.answer)[0]
        for option, text in q.options.items():
            ok, said = q.feedback(option)
            assert ok == (option == q.answer) and said == text and len(text) > 20
    else:
        assert q.feedback(q.answer)[0]
        for value in q.hints.values():
            ok, said = q.feedback(value)
            assert not ok and "is what you get if" in said


def test_the_form_gives_feedback_and_shows_a_number_after_the_third_miss():
    quiz = ask("02.a")
    assert quiz.answer("").startswith("Not quite. give an answer")
    assert "not a number" in quiz.answer("many")
    assert "counted one factor" in quiz.answer("1280")
    assert "Try again" in quiz.answer("5")
    assert "The answer is 2560" in quiz.answer("3000")
    assert quiz.answer("2,560").startswith("Right.") and "Right" in quiz.result.value
    choice = ask("02.b")
    choice.input.value = "A zero, B random"
    choice.button.click()
    assert "Not quite" in choice.result.value and choice.attempts == [("A zero, B random", False)]


def test_a_quiz_shows_as_text_without_a_widget_frontend_and_as_a_form_with_one():
    quiz = ask("04.a")
    bundle = quiz._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "( ) the effective number of distinct samples" in bundle["text/plain"]


def test_bad_questions_and_keys_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="not one of the options"):
        Choice("q", {"a": "x", "b": "y"}, "c")
    with pytest.raises(ValueError, match="at least two"):
        Choice("q", {"a": "x"}, "a")
    with pytest.raises(ValueError, match="finite answer"):
        Number("q", float("nan"), "why")
    with pytest.raises(KeyError, match="03.a"):
        ask("03.z")
    assert isinstance(ask("01.a"), Quiz)
