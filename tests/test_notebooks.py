"""The committed notebooks read as lessons: a title first, full-mode outputs, no errors."""

import json
from pathlib import Path

import pytest

from lorakit.results import notebook_number

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def number(path: Path) -> str:
    """A notebook's number as its title writes it: "04", or "04b" for the second half of a split chapter."""
    return notebook_number(path.stem)


def test_notebooks_are_numbered_from_00_without_gaps():
    numbers = sorted({int(number(p)[:2]) for p in NOTEBOOKS})
    assert numbers == list(range(len(numbers))), f"notebooks should be numbered 00, 01, ... without gaps: {numbers}"
    assert all(n[:2].isdigit() and n[2:] in ("", "b") for n in map(number, NOTEBOOKS)), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_its_title_and_carries_full_mode_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith(f"# {number(path)} · "), \
        f"{path.name} must open with a markdown title '# {number(path)} · ...'"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code), f"{path.name} has unexecuted cells: run `make notebooks`"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{path.name} was committed with an error output"
    text = "".join(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
                   for c in code for o in c["outputs"])
    assert "mode: quick" not in text, f"{path.name} carries quick-mode outputs: run `make notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_asserts_a_wall_clock_time(path):
    """A busy laptop must not crash a lesson: times are printed against their bar (lorakit.timing), never asserted."""
    import re

    code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    timed = [line.strip() for line in code.splitlines()
             if re.match(r"\s*assert\b", line) and re.search(r"second|elapsed|timing|_time\b|\btime_|perf_counter", line)]
    assert not timed, f"{path.name} asserts a time: {timed}; print lorakit.timing.versus_bar(...) instead"

