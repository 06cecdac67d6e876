"""The packages of regmix_plugin import each other one way only, and docs/ARCHITECTURE.md says so.

Read from the source with ast. The nodes are the stage packages (``fit``, ``sweep``, ...), each with its
``commands.py`` (a stage's command line is part of the stage), and the top-level modules (``mixture``,
``table``, ``cli``, ...), ``mixture_commands`` among them. An edge is any import, inside functions too (a
lazy import is still a dependency), and any string naming a module of the package (``importlib`` by name:
the CLI's list of command modules, a registry's built-in modules). Running a program is not an import:
``python -m regmix_plugin.sweep.runner`` in an sbatch script, or the runner's forked ``python -m
regmix_plugin`` (runpy), cross a process boundary as a shell command line does.

``python tests/test_import_graph.py`` rewrites the table in docs/ARCHITECTURE.md from the code (keeping each
row's prose); :func:`test_the_architecture_table_is_the_import_graph` fails when they differ.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "regmix_plugin"
DOC = REPO / "docs" / "ARCHITECTURE.md"
COMMAND_MODULES = {"commands", "mixture_commands", "cli", "__main__"}
# Shared modules every stage may use; they import no stage. The entry point (cli, __main__) is not shared.
SHARED = {"errors", "io", "mixture", "table", "metrics", "schedule", "markdown_table", "config_schema", "plugins",
          "reuse_plan", "processes"}
ENTRY = {"cli", "__main__", "mixture_commands"}
_MODULE_NAME = re.compile(r"^regmix_plugin(\.[A-Za-z_]\w*)+$")


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_NAME.match(node.value):
            out.add(node.value)
    return out


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "regmix_plugin" or len(parts) < 2:
        return None
    top = parts[1]
    return top if (PACKAGE / top).is_dir() or (PACKAGE / f"{top}.py").is_file() else None


def _is_command(module: str) -> bool:
    return module.split(".")[-1] in COMMAND_MODULES


def nodes() -> list[str]:
    """Every stage package and top-level module (``__init__`` aside)."""
    found = [p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    found += [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    return sorted(found)


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Node -> nodes it imports, and every import of a command module by a library module."""
    graph: dict[str, set[str]] = {n: set() for n in nodes()}
    into_commands = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        src = rel.parts[0]
        if src == "__init__":
            continue
        for module in _imports(path):
            dst = _node(module)
            if dst is None:
                continue
            if _is_command(module) and rel.name not in COMMAND_MODULES:
                into_commands.append(f"{path.relative_to(PACKAGE)} imports {module}")
            if dst != src:
                graph[src].add(dst)
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


def test_no_import_cycle_between_packages():
    graph, _ = import_graph()
    assert {"fit", "optimize", "synthesize", "sweep", "collect", "export", "cli"} <= set(graph)  # the walk saw them
    assert graph["cli"] >= {"sweep", "collect", "fit"}  # command modules named as strings count
    cycle = _cycle(graph)
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle)


def test_the_shared_modules_import_no_stage():
    graph, _ = import_graph()
    for shared in SHARED:
        assert graph[shared] <= SHARED, f"{shared} imports {sorted(graph[shared] - SHARED)}"


def test_no_library_module_imports_a_command_module():
    assert import_graph()[1] == []


def test_fit_holds_only_predictors_and_their_support():
    # fit/ is the predictors over the simplex: it imports neither the laws of the scaling stages nor anything above.
    graph, _ = import_graph()
    assert graph["fit"] <= SHARED, sorted(graph["fit"] - SHARED)


# ---- the table in docs/ARCHITECTURE.md -------------------------------------------------------------------

BEGIN = "<!-- import graph: `python tests/test_import_graph.py` writes this table from the code; do not edit the imports columns -->"
END = "<!-- end of import graph -->"
HEADER = "| package | holds | imports (stages) | imports (shared modules) |\n|---|---|---|---|"


def _label(node: str) -> str:
    return f"`{node}/`" if (PACKAGE / node).is_dir() else f"`{node}.py`"


def _order(graph: dict[str, set[str]]) -> list[str]:
    """Dependencies before their users (shared modules first, the entry point last), ties by name."""
    rank = {n: 0 if n in SHARED else 2 if n in ENTRY else 1 for n in graph}
    done: list[str] = []
    todo = set(graph)
    while todo:
        ready = sorted((n for n in todo if graph[n] <= set(done)), key=lambda n: (rank[n], n))
        if not ready:  # a cycle: the cycle test says which; list the rest as they come
            ready = sorted(todo, key=lambda n: (rank[n], n))
        done.append(ready[0])
        todo.discard(ready[0])
    return done


def _docstring_line(node: str) -> str:
    path = PACKAGE / node / "__init__.py" if (PACKAGE / node).is_dir() else PACKAGE / f"{node}.py"
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def _rows_in(text: str) -> dict[str, list[str]]:
    """The table in the doc: first column -> its cells."""
    rows = {}
    if BEGIN in text and END in text:
        body = text.split(BEGIN, 1)[1].split(END, 1)[0]
        for line in body.strip().splitlines()[2:]:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


def architecture_table(old: dict[str, list[str]]) -> str:
    """The table from the code; a row's prose ("holds") is kept from ``old``, or read from the docstring."""
    graph, _ = import_graph()
    lines = [BEGIN, HEADER]
    for node in _order(graph):
        label = _label(node)
        holds = old[label][1] if label in old and len(old[label]) > 1 else _docstring_line(node)
        stages = ", ".join(sorted(graph[node] - SHARED)) or "-"
        shared = ", ".join(sorted(graph[node] & SHARED)) or "-"
        lines.append(f"| {label} | {holds} | {stages} | {shared} |")
    lines.append(END)
    return "\n".join(lines)


def test_the_architecture_table_is_the_import_graph():
    text = DOC.read_text()
    assert BEGIN in text and END in text, "docs/ARCHITECTURE.md lost its import-graph table markers"
    written = _rows_in(text)
    expected = _rows_in(architecture_table(written))
    assert sorted(written) == sorted(expected), "packages differ; run `python tests/test_import_graph.py`"
    for label, cells in expected.items():
        assert written[label][2:] == cells[2:], (
            f"{label}: the doc says it imports {written[label][2:]}, the code {cells[2:]}; "
            "run `python tests/test_import_graph.py`")


def write_table() -> None:
    text = DOC.read_text()
    if BEGIN not in text:
        sys.exit(f"{DOC}: no {BEGIN!r} marker; put it and {END!r} where the table goes")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + architecture_table(_rows_in(text)) + tail)


if __name__ == "__main__":
    write_table()
