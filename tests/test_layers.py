"""Imports run one way, down the stages of the data's path, and no two files import each other, even through others.

The rule is read from the source (every import statement, those inside functions included), so a lazy import that
goes the wrong way is caught as well as a module-level one.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
# The stages, lowest first: a module may import its own stage and those before it, never one after it.
LAYERS = ["errors", "util", "grid", "data", "models", "diffusion", "sampling", "training", "metrics", "report",
          "experiments", "studies", "cli"]  # fmt: skip


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    """``{name: path}`` of every module of gridit_core and widgets."""
    return {module_name(p): p for folder in ("gridit_core", "widgets") for p in (ROOT / folder).rglob("*.py")}


def imports(path, known):
    """The modules of ``known`` that the file at ``path`` imports (``from package import module`` names the module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in known}


def layer(name):
    """The stage of a module: its first name under gridit_core (the package itself counts as ``errors``); widgets
    sit above every stage."""
    parts = name.split(".")
    if parts[0] == "widgets":
        return len(LAYERS)
    return LAYERS.index(parts[1]) if len(parts) > 1 else 0


def graph():
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_every_stage_is_listed():
    stages = {p.stem if p.is_file() else p.name for p in (ROOT / "gridit_core").iterdir()
              if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}  # fmt: skip
    assert stages == set(LAYERS)


def test_imports_run_down_the_stages():
    wrong = [f"{a} imports {b}" for a, deps in graph().items() for b in deps if layer(b) > layer(a)]
    assert wrong == []


def cycle(edges):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_file_imports_itself_through_others():
    assert cycle(graph()) is None


def test_no_stage_imports_itself_through_another():
    stages = {}
    for a, deps in graph().items():
        stages.setdefault(layer(a), set()).update(layer(b) for b in deps if layer(b) != layer(a))
    assert cycle(stages) is None


def test_the_checks_can_fail():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
    assert layer("gridit_core.sampling.grids") < layer("gridit_core.training.trainer") < layer("widgets.sampler")
