"""The exercises' machinery: run a learner's answer through its check, keep the notebook running, sum up.

Every exercise cell ends with `answer = exercise(name, answer, check, reference)`:

- the check prints "[OK] ..." or "[HINT] ..." (a precise hint for the typical mistakes; it never
  raises, whatever the learner's code does);
- a passing answer is handed back, so the cells below run on the learner's own code;
- an answer not written yet, or wrong, is replaced by the kit's reference (said in the output), so
  "Run All" on an untouched student notebook still runs every cell below;
- `exercise_summary()` at the end of a notebook lists what is done and what is left.

The checks for each chapter live in `lorakit.exercises`.
"""

from __future__ import annotations

import functools
import traceback
from typing import Callable, TypeVar

T = TypeVar("T")

DONE, NOT_WRITTEN, WRONG = "done", "not done yet", "has a mistake"
_results: dict[str, str] = {}  # exercise name -> status, in the order the notebook ran them
_last = {"status": WRONG}  # what the latest check found


def report(ok: bool, message: str, written: bool = True) -> bool:
    """Print a check's verdict ("[OK]" or "[HINT]") and remember it; `written=False`: the answer is still a stub."""
    _last["status"] = DONE if ok else (WRONG if written else NOT_WRITTEN)
    print(("[OK] " if ok else "[HINT] ") + message)
    return ok


def never_raises(check: Callable[..., bool]) -> Callable[..., bool]:
    """Turn anything the learner's code raises into a hint naming the error and the line it came from."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs) -> bool:
        try:
            return check(*args, **kwargs)
        except NotImplementedError:
            return report(False, "not written yet (your code raises NotImplementedError): replace the "
                                 "`raise NotImplementedError()` with your lines", written=False)
        except Exception as err:  # the learner's code, whatever it does, must not stop the notebook
            frames = traceback.extract_tb(err.__traceback__)
            where = next((f"line {f.lineno}: {f.line}" for f in reversed(frames) if "lorakit" not in f.filename), "")
            hint = ""
            if isinstance(err, RuntimeError) and ("shape" in str(err) or "size" in str(err)):
                hint = " — a shape mismatch: print the shapes of the tensors on that line"
            return report(False, f"your code raised {type(err).__name__}: {str(err)[:160]}"
                                 + (f" ({where})" if where else "") + hint)

    return wrapper


def exercise(name: str, answer: T, check: Callable[[T], bool], reference: T) -> T:
    """Check the learner's `answer`; return it if it passes, else the kit's `reference` for the cells below."""
    if check(answer):
        _results[name] = DONE
        return answer
    _results[name] = _last["status"] if _last["status"] != DONE else WRONG
    print(f"    (the cells below use the kit's reference for {name!r}; come back to it any time)")
    return reference


def passed(name: str) -> bool:
    """Did the learner's own answer to this exercise pass its check (in this kernel)?"""
    return _results.get(name) == DONE


def exercise_summary() -> dict[str, str]:
    """Print and return every exercise this notebook ran, with its status (done / not done yet / has a mistake)."""
    if not _results:
        print("no exercises were run in this kernel")
    for name, status in _results.items():
        print(f"  {'[x]' if status == DONE else '[ ]'} {name}: {status}")
    left = [n for n, s in _results.items() if s != DONE]
    if _results:
        print(f"{len(_results) - len(left)} of {len(_results)} exercises done" + ("; left: " + ", ".join(left) if left else ""))
    return dict(_results)
