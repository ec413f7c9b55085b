"""The import graph of lit_interp: no circle, and no import from a lower floor to a higher one (docs/architecture.md).

Every import counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lit_interp"

# (floor, group) of every module, by its first matching prefix. A module may import modules of a lower floor,
# or of its own group; two groups on one floor (training and reading) never import each other.
LAYERS = [
    ("lit_interp.errors", 0, "foundation"),
    ("lit_interp.memory", 0, "foundation"),
    ("lit_interp.heads", 0, "foundation"),
    ("lit_interp.files", 0, "foundation"),
    ("lit_interp.formation", 0, "foundation"),
    ("lit_interp.startup", 0, "foundation"),
    ("lit_interp.snapshots", 1, "store"),
    ("lit_interp.runlogs", 1, "store"),
    ("lit_interp.rundir", 1, "store"),
    ("lit_interp.checkpoints", 1, "store"),
    ("lit_interp.optuna_storage", 1, "store"),
    ("lit_interp.sweep_dir", 1, "store"),
    ("lit_interp.tasks", 2, "model"),
    ("lit_interp.analysis", 2, "model"),
    ("lit_interp.callbacks", 3, "training"),
    ("lit_interp.guards", 3, "training"),
    ("lit_interp.summary", 3, "training"),
    ("lit_interp.loggers", 3, "training"),
    ("lit_interp.images", 3, "training"),
    ("lit_interp.sweep_pruning", 3, "training"),
    ("lit_interp.report", 3, "reading"),
    ("lit_interp.rebuild", 3, "reading"),
    ("lit_interp.notebook", 3, "reading"),
    ("lit_interp.commands", 4, "commands"),
    ("lit_interp.cli", 5, "entry"),
    ("lit_interp.__main__", 5, "entry"),
    ("lit_interp", 5, "entry"),  # the package itself: `lit_interp.load`
]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> tuple[int, str]:
    for prefix, floor, group in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return floor, group
    raise AssertionError(f"{module} has no layer in tests/test_architecture.py (and docs/architecture.md)")


def imports(path: Path, modules: set[str]) -> set[str]:
    """The lit_interp modules (of `modules`) that `path` imports anywhere in the file.

    `from lit_interp import x` and `from lit_interp.x import y` name the module x when x is one, else the package.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return found & modules


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module under `root` (a package directory)."""
    paths = {module_name(path, root): path for path in root.rglob("*.py")}
    edges = {name: imports(path, set(paths)) - {name} for name, path in paths.items()}
    # A package's __init__ importing its own submodules is how it exposes them, not a dependency upwards.
    return {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in edges.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports from a lower floor to a higher one, or between two groups of one floor."""
    wrong = []
    for module, targets in edges.items():
        floor, group = layer(module)
        for target in targets:
            target_floor, target_group = layer(target)
            if target_floor > floor or (target_floor == floor and target_group != group):
                wrong.append(
                    f"{module} ({group}, floor {floor}) imports {target} ({target_group}, floor {target_floor})"
                )
    return sorted(wrong)


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target, [*path, target])):
                return circle
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (circle := visit(module, [module])):
            return circle
    return None


def test_every_module_has_a_layer():
    for module in graph():
        layer(module)


def test_no_module_imports_a_higher_floor_or_another_group_of_its_floor():
    assert violations(graph()) == []


def test_the_import_graph_has_no_circle():
    assert find_circle(graph()) is None


def test_the_checks_catch_a_report_importing_a_callback_or_a_command_and_a_circle(tmp_path):
    root = tmp_path / "lit_interp"
    for name in ("callbacks", "commands/__init__", "commands/analyze", "report/__init__", "snapshots", "files"):
        (root / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.py").write_text("")
    (root / "__init__.py").write_text("")
    lazy = "    from lit_interp.callbacks import AnalysisSnapshots\n    from lit_interp.commands import analyze\n"
    (root / "report" / "runs.py").write_text("def f():\n" + lazy)
    (root / "snapshots.py").write_text("import lit_interp.files\n")
    (root / "files.py").write_text("from lit_interp import snapshots\n")
    edges = graph(root)
    assert edges["lit_interp.report.runs"] == {"lit_interp.callbacks", "lit_interp.commands.analyze"}
    assert [line.split(" (")[0] + " -> " + line.split(" imports ")[1].split(" (")[0] for line in violations(edges)] == [
        "lit_interp.files -> lit_interp.snapshots",  # the foundation importing the store above it
        "lit_interp.report.runs -> lit_interp.callbacks",
        "lit_interp.report.runs -> lit_interp.commands.analyze",
    ]
    assert find_circle(edges) == ["lit_interp.files", "lit_interp.snapshots", "lit_interp.files"]


LONGEST_FUNCTION = 60  # lines, docstring included


def test_no_function_is_longer_than_the_limit():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{module_name(path)}.{node.name}: {length} lines")
    assert not long, "\n".join(long)
