"""The package's seams: no import cycles, and the layers point one way."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lorakit"


def _imports() -> dict[str, set[str]]:
    """Module -> the lorakit modules it imports, at module level or inside functions."""
    graph = {}
    for path in sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("*/*.py")]):
        name = path.stem if path.parent == PACKAGE else path.parent.name  # a subpackage counts as one module
        found = graph.get(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lorakit."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "lorakit":
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lorakit."))
        graph[name] = found - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = _imports()
    graph.pop("__init__", None)  # the package front door imports others, none imports it back
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_pretraining_does_not_depend_on_fine_tuning():
    graph = _imports()
    assert "finetune" not in graph["pretrain"] and "finetune" not in graph["diffusion"]
    assert "memory" not in graph["diffusion"] and "finetune" not in graph["memory"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The parts of ARCHITECTURE.md: a module may import from its own part and earlier ones only.
PARTS = {
    0: {"paths", "config", "devices", "workers", "timing", "memory", "arguments", "seeds", "generations"},
    1: {"data", "tokenizer", "layout", "pipeline", "sd15", "pixels", "classifier", "metrics", "evaluation", "diffusion", "pretrain"},
    2: {"lora", "adapters", "algorithms", "formats", "merge", "extract"},
    3: {"finetune", "stacked", "dreambooth", "control", "concepts", "collapse", "interpolation", "audit"},
    4: {"check", "exercises", "quiz", "questions", "editions", "claims", "verdicts", "results", "report", "plotting", "widgets", "envcheck", "__main__", "__init__"},
}


def test_every_module_has_a_part_and_imports_point_backwards():
    part = {m: p for p, modules in PARTS.items() for m in modules}
    graph = _imports()
    assert set(graph) == set(part), f"place new modules in ARCHITECTURE.md and PARTS: {set(graph) ^ set(part)}"
    upward = [f"{m} ({part[m]}) -> {d} ({part[d]})" for m, deps in graph.items() for d in deps if part[d] > part[m]]
    assert not upward, f"imports that point to a later part: {upward}"
