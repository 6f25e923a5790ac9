"""The student edition: the notebooks with every exercise's solution replaced by a stub, outputs cleared.

The source notebooks are the instructor edition. They mark solutions the way nbgrader does, so an
instructor who uses nbgrader can release them as assignments and autograde with the kit's checks:

- a solution is the code between `### BEGIN SOLUTION` and `### END SOLUTION` in a cell whose
  metadata says `"nbgrader": {"solution": true, ...}`; the student gets nbgrader's stub in its place,
  `# YOUR CODE HERE` and `raise NotImplementedError()`;
- a check cell ends with `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS`, an assertion that the
  learner's own answer passed (for autograding); the student edition drops it.

`write_student_edition` does this without an nbgrader course folder (`make student`).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import time
from pathlib import Path
from typing import Iterable

from lorakit.paths import REPLACED_DIR, REPO_ROOT, atomic_path

STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
_SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)", re.M | re.S)
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)", re.M | re.S)
STUDENT_DIR = REPO_ROOT / "student"


def _stubbed(source: str) -> str:
    """The cell's code with each solution block replaced by nbgrader's stub, indented as the block was."""
    return _SOLUTION.sub(lambda m: "\n".join(m.group(1) + line for line in STUB.splitlines()) + m.group(2), source)


def student_notebook(notebook: dict) -> dict:
    """A notebook (nbformat JSON) as the student edition: solutions stubbed, hidden tests dropped, outputs cleared."""
    nb = copy.deepcopy(notebook)
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if "### BEGIN SOLUTION" in source and not cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            raise ValueError(f"cell {cell.get('id', '?')} has a solution block but no nbgrader solution metadata: "
                             'add "nbgrader": {"solution": true, ...} so nbgrader releases it as an answer cell')
        source = _HIDDEN.sub("", _stubbed(source)).rstrip("\n")
        cell["source"] = source.splitlines(True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    nb.get("metadata", {}).pop("widgets", None)  # saved widget state belongs to the executed edition
    return nb


def exercise_names(notebook: dict) -> list[str]:
    """The nbgrader ids of a notebook's answer cells, in order (empty for a notebook without exercises)."""
    return [c["metadata"]["nbgrader"]["grade_id"] for c in notebook["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def write_student_edition(notebooks: Iterable[str | Path], out: str | Path = STUDENT_DIR,
                          overwrite: bool = False) -> dict[Path, str]:
    """Write each notebook's student edition into `out`; returns path -> "written" or "kept".

    A student notebook that exists is the learner's work: it is kept unless `overwrite`, and even then
    a copy goes to runs/replaced/ first. Every notebook is read and converted before anything is written.
    """
    editions = {}
    for path in map(Path, notebooks):
        if path.suffix != ".ipynb" or not path.is_file():
            raise FileNotFoundError(f"{path} is not a notebook file; pass notebooks/*.ipynb")
        editions[Path(out) / path.name] = student_notebook(json.loads(path.read_text()))
    Path(out).mkdir(parents=True, exist_ok=True)
    done = {}
    for target, nb in editions.items():
        if target.exists() and not overwrite:
            done[target] = "kept"
            continue
        if target.exists():
            kept = REPLACED_DIR / f"student-{time.strftime('%Y%m%d-%H%M%S')}"
            kept.mkdir(parents=True, exist_ok=True)
            shutil.copy2(target, kept / target.name)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        done[target] = "written"
    return done
