"""The import rule of docs/architecture.md: no import runs up a floor, no modules import each other in a loop."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "unlearnleak"
DOC = ROOT / "docs" / "architecture.md"
_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*$")


def floors() -> dict[str, int]:
    """Top-level module name → floor, as the table in docs/architecture.md says."""
    placed: dict[str, int] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            for name in re.findall(r"`([A-Za-z_]+)`", match.group(2)):
                assert name not in placed, f"docs/architecture.md places {name} twice"
                placed[name] = int(match.group(1))
    assert placed, "docs/architecture.md has no floor table"
    return placed


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (never executed)."""
    kept: list[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        kept.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return kept


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the package modules it imports at run time (deferred imports included)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:  # `from package import submodule` imports the submodule
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in known else source)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name].update(t for t in targets if t in known and t != name)
    return graph


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_is_placed_on_a_floor() -> None:
    placed = floors()
    unplaced = sorted({top(name) for name in modules()} - set(placed))
    assert not unplaced, f"add these to the floor table in docs/architecture.md: {unplaced}"


def test_no_import_runs_up_a_floor() -> None:
    placed = floors()
    known = modules()
    upward = [
        f"{source} (floor {placed[top(source)]}) imports {target} (floor {placed[top(target)]})"
        for source, targets in imports(known).items()
        for target in targets
        if top(source) in placed and top(target) in placed and placed[top(target)] > placed[top(source)]
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_loops() -> None:
    graph = imports(modules())
    # A package's __init__ importing its own children is how packages re-export; only loops through other edges count.
    edges = {
        source: {t for t in targets if not t.startswith(source + ".")} for source, targets in graph.items()
    }
    loops = [component for component in _strongly_connected(edges) if len(component) > 1]
    assert not loops, f"import loops: {[sorted(loop) for loop in loops]}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on deep packages)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


@pytest.mark.parametrize(
    ("graph", "loops"),
    [({"a": {"b"}, "b": {"a"}}, [["a", "b"]]), ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
     ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]])],
)
def test_the_loop_finder_finds_loops(graph: dict[str, set[str]], loops: list[list[str]]) -> None:
    assert sorted(sorted(c) for c in _strongly_connected(graph) if len(c) > 1) == loops
