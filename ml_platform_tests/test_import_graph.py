"""The modules of ``ml_platform`` import each other without a cycle (issue #16).

The graph is built from the source with :mod:`ast`, not by importing anything, so it is fast and
sees every import, including the ones that only run later.

What counts as an edge ``a -> b``: every import of an ``ml_platform`` module written in ``a``,
wherever it is written:

* module-level imports, including those under ``if TYPE_CHECKING:`` (the type checker follows them,
  and a type used across a cycle still means the two modules are one unit that cannot be understood,
  tested or moved apart);
* function-level imports: they run as soon as the function is called, so a cycle through them is a
  runtime cycle all the same (the three cycles issue #16 names were of both kinds: ``cli`` <->
  ``lineage.evidence`` only through function-level imports on both sides, ``definitions`` ->
  ``defs.openlineage`` -> ``lineage.openlineage.export`` -> ``definitions`` partly through them, and
  ``lib.online.store`` -> ``lib.online.features`` -> ``lib.online.store`` through a
  ``TYPE_CHECKING`` import). A function-level import that keeps a heavy dependency lazy is fine; it
  just must not point back up the graph.

``from ml_platform.x import y`` is an edge to ``ml_platform.x.y`` when ``y`` is a submodule of
``ml_platform.x`` and to ``ml_platform.x`` otherwise; relative imports are resolved the same way.
A submodule's implicit import of its parent package is not an edge (a package ``__init__`` that
re-exports its submodules would otherwise be in a cycle with each of them, harmlessly).

A cycle not yet fixed is listed in :data:`KNOWN_CYCLE_EDGES` by the edge that closes it, with the
issue that removes it; that edge is left out of the graph (any other cycle through the same modules
is still found), and once the edge is gone the test asks for the entry to go too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import ml_platform

ROOT = Path(ml_platform.__file__).resolve().parent
PACKAGE = "ml_platform"

#: Known cycles, each by the one edge that closes it, left out of the graph until it is gone:
#: (importing module or package, imported module). Issue #16 ends with this empty.
KNOWN_CYCLE_EDGES: frozenset[tuple[str, str]] = frozenset(
    {
        # issue #16: lineage.evidence's `_has_command` imports ml_platform.cli (whose `mlp evidence`
        # imports lineage.evidence) to see whether `mlp reproduce` exists; it is to read
        # ml_platform.cli_commands instead, an edit to lineage.evidence (being split into a package
        # now), after which this entry goes. Matches the module or any module of that package.
        ("ml_platform.lineage.evidence", "ml_platform.cli"),
    }
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The ``ml_platform`` modules ``name`` imports, with the line of each import."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                yield (sub if sub in modules else source), node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported module: line of the first such import}, over every module of the package."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, modules):
            if target in modules and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [
        f"    {a} -> {b} (line {line})"
        for a in component
        for b, line in sorted(graph[a].items())
        if b in members
    ]
    return " <-> ".join(component) + ":\n" + "\n".join(edges)


def test_the_graph_sees_every_kind_of_import() -> None:
    """The builder itself: module-level, function-level, relative and submodule imports are edges."""
    graph = import_graph()
    # module level: definitions imports the settings class
    assert "ml_platform.settings" in graph["ml_platform.definitions"]
    # function level only: `mlp demo` imports the demo module inside its command
    assert "ml_platform.demo" in graph["ml_platform.cli"]
    # `from ml_platform.lineage import records as rec` is the submodule, not the package
    assert "ml_platform.lineage.records" in graph["ml_platform.lineage.openlineage.export"]
    # a cycle is found and named
    assert cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c"]]


def _known(source: str, target: str) -> bool:
    return any((source == a or source.startswith(a + ".")) and target == b for a, b in KNOWN_CYCLE_EDGES)


def test_no_import_cycles() -> None:
    """No cycle, apart from the known ones of :data:`KNOWN_CYCLE_EDGES`, each of which must still exist
    (a fixed one is taken off the list, so it cannot come back unnoticed)."""
    graph = import_graph()
    for a, b in sorted(KNOWN_CYCLE_EDGES):
        importers = [s for s in graph if (s == a or s.startswith(a + ".")) and b in graph[s]]
        assert importers, f"{a} no longer imports {b}: take the edge off KNOWN_CYCLE_EDGES"
    graph = {s: {t: line for t, line in edges.items() if not _known(s, t)} for s, edges in graph.items()}
    found = cycles(graph)
    assert not found, "import cycles among ml_platform modules (issue #16):\n" + "\n".join(
        _describe(c, graph) for c in found
    )
