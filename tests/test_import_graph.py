"""The stages import each other one way only: no cycle between the packages of regmix_plugin.

Read from the source with ast (imports inside functions count too: a lazy import is still a dependency).
The nodes are the stage packages (``fit``, ``optimize``, ...) and the shared top-level modules
(``mixture``, ``table``, ...). The command layer is left out: a stage's ``commands.py`` (and
``mixture_commands.py``, ``cli.py``) may call any library, and no library module may import a command module.
docs/ARCHITECTURE.md draws the resulting order.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "regmix_plugin"
COMMAND_MODULES = {"commands", "mixture_commands", "cli", "__main__"}
# The one library import of the entry point: a preloaded local sweep runs `regmix train` command lines in a
# forked process (DECISIONS 20).
ENTRY_POINT_CALLERS = {"sweep/runner.py imports regmix_plugin.cli"}
# Shared modules every stage may use; they must not import a stage.
CORE = {"errors", "io", "mixture", "table", "metrics", "schedule", "markdown_table", "config_schema"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "regmix_plugin" or len(parts) < 2:
        return None
    top = parts[1]
    return top if (PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file() else None


def _is_command(module: str) -> bool:
    return module.split(".")[-1] in COMMAND_MODULES


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Stage -> stages it imports (command modules left out), and every import of a command module by a library."""
    graph: dict[str, set[str]] = {}
    into_commands = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name in COMMAND_MODULES:
            continue
        src = rel.parts[0]
        for module in _imports(path):
            dst = _node(module)
            if dst is None:
                continue
            if _is_command(module):
                into_commands.append(f"{path.relative_to(PACKAGE)} imports {module}")
            elif dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph, into_commands


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycle_between_stages():
    graph, _ = import_graph()
    assert {"fit", "optimize", "scale", "continual", "laws", "sweep"} <= set(graph)  # the walk saw the stages
    cycle = _cycle(graph)
    assert cycle is None, "import cycle between stages: " + " -> ".join(cycle)


def test_the_shared_modules_import_no_stage():
    graph, _ = import_graph()
    for core in CORE:
        assert graph.get(core, set()) <= CORE, f"{core} imports {sorted(graph[core] - CORE)}"


def test_no_library_module_imports_a_command_module():
    assert set(import_graph()[1]) <= ENTRY_POINT_CALLERS


def test_fit_holds_only_predictors_and_their_support():
    # fit/ is the predictors over the simplex: it imports neither the laws of the scaling stages nor anything above.
    graph, _ = import_graph()
    assert graph["fit"] <= CORE, sorted(graph["fit"] - CORE)
