#!/usr/bin/env python3
"""Fail on any import cycle among the project's own modules (`make test` runs it).

    python tools/import_cycles.py        # sdactivate tests integration bench examples
    python tools/import_cycles.py --root DIR PACKAGE...

Reads the source with `ast`, never imports it. Every import statement counts wherever it is:
at module level, inside functions (a lazy import is still a dependency a reader must follow),
and under `if TYPE_CHECKING:` (a type-only import still ties the two files together; a
Protocol on the using side breaks such a tie). `importlib.import_module("a.b")` with a
literal name counts too, and one by a name computed as `f"{__name__}.{...}"` (PEP 562 lazy
submodules) counts as an import of each submodule that the module names in a module-level
literal (`__all__`, a `_SUBMODULES` tuple, a `_LAZY` table's values): those are the names
the lookup can reach. Any other computed name cannot be read: it is reported and the run
fails.

A name that is none of ours is tried beside the importing file too (`import loadgen` in
bench/epoll_client.py), where a script's own directory or pytest's rootdir insertion would
find it, so a flat import cannot hide a cycle.

An edge goes to the module an import names: `import a.b.c` and `from a.b import c` (c a
submodule) to `a.b.c`; `from a.b import name` (not a submodule) to `a.b`'s __init__. The
parent packages Python initialises on the way are not edges: a package's __init__ that
re-exports its submodules would otherwise form a cycle with every submodule that imports a
sibling, though Python has the parent in sys.modules before any child runs.

Exit status: 0 without cycles; 1 with the cycles (each as a chain of file:line), or an
unreadable dynamic import; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("sdactivate", "tests", "integration", "bench", "examples")


@dataclass(frozen=True)
class Edge:
    target: str
    path: Path
    line: int


def modules(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the packages."""
    found: dict[str, Path] = {}
    for package in packages:
        base = root / package
        files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
        for path in files:
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _containing(name: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of `name` that is one of ours (`a.b.c` -> `a.b` if c is a name)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _resolve(name: str, package: str, known: dict[str, Path]) -> str | None:
    """Ours that `import name` reaches: by its own path, else beside the importing file."""
    found = _containing(name, known)
    if found is None and package:
        found = _containing(f"{package}.{name}", known)
        if found == package:  # only the importer's own package matched: not this name
            found = None
    return found


def _under_name(arg: ast.expr) -> bool:
    """`f"{__name__}.{...}"`: a submodule of the module doing the import."""
    return (
        isinstance(arg, ast.JoinedStr)
        and len(arg.values) >= 2
        and isinstance(arg.values[0], ast.FormattedValue)
        and isinstance(arg.values[0].value, ast.Name)
        and arg.values[0].value.id == "__name__"
        and isinstance(arg.values[1], ast.Constant)
        and str(arg.values[1].value).startswith(".")
    )


def _literal_names(tree: ast.Module) -> set[str]:
    """Every string in the module-level assignments of literal tuples, lists, sets, dicts."""
    names: set[str] = set()
    for node in tree.body:
        value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
        if isinstance(value, ast.Tuple | ast.List | ast.Set | ast.Dict):
            for leaf in ast.walk(value):
                if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                    names.add(leaf.value)
    return names


def _is_import_module(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name)
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def edges(name: str, path: Path, known: dict[str, Path], dynamic: list[str]) -> Iterator[Edge]:
    """The imports of module `name` (file `path`) that name one of `known`."""
    tree = ast.parse(path.read_bytes(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name, package, known)
                if target is not None:
                    yield Edge(target, path, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                if node.level > 1:
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
                if _containing(base, known) is None and package:
                    flat = f"{package}.{base}"  # a flat import of a file beside this one
                    base = flat if _containing(flat, known) not in (None, package) else base
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target not in known:
                    target = _containing(base, known) or ""
                if target:
                    yield Edge(target, path, node.lineno)
        elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                target = _resolve(arg.value, package, known)
                if target is not None:
                    yield Edge(target, path, node.lineno)
            elif _under_name(arg):
                named = _literal_names(tree)
                for sub in known:
                    parent, _, last = sub.rpartition(".")
                    if parent == name and last in named:
                        yield Edge(sub, path, node.lineno)
            else:
                dynamic.append(f"{path}:{node.lineno}: import by a computed name")


def graph(root: Path, packages: Sequence[str]) -> tuple[dict[str, list[Edge]], list[str]]:
    known = modules(root, packages)
    dynamic: list[str] = []
    result = {
        name: [e for e in edges(name, path, known, dynamic) if e.target != name]
        for name, path in known.items()
    }
    return result, dynamic


def strongly_connected(graph_: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph_):
        if start in index:
            continue
        work: list[tuple[str, Iterator[Edge]]] = [(start, iter(graph_[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for edge in children:
                child = edge.target
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph_.get(child, []))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def shortest_cycle(graph_: dict[str, list[Edge]], members: list[str]) -> list[Edge]:
    """A shortest cycle through the first member of a component (breadth-first), as edges;
    edge i leaves the module edge i-1 enters (the first leaves members[0])."""
    inside = set(members)
    start = members[0]
    came: dict[str, tuple[str, Edge]] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph_[node]:
                if edge.target not in inside:
                    continue
                if edge.target == start:
                    chain = [edge]
                    while node != start:
                        node, step = came[node]
                        chain.append(step)
                    return chain[::-1]
                if edge.target not in came:
                    came[edge.target] = (node, edge)
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {members}")


def describe(start: str, chain: list[Edge], root: Path) -> str:
    steps = [start]
    for edge in chain:
        steps.append(f"-> {edge.target} ({edge.path.relative_to(root)}:{edge.line})")
    return " ".join(steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", default=list(PACKAGES))
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    opts = parser.parse_args(argv)
    root: Path = opts.root.resolve()
    missing = [p for p in opts.packages if not (root / p).exists()]
    if missing:
        parser.error(f"not under {root}: {missing!r}")
    graph_, dynamic = graph(root, opts.packages)
    components = strongly_connected(graph_)
    for members in components:
        print(f"import cycle among {', '.join(members)}:", file=sys.stderr)
        print(f"  {describe(members[0], shortest_cycle(graph_, members), root)}", file=sys.stderr)
    for line in dynamic:
        print(f"unreadable import: {line}", file=sys.stderr)
    count = sum(len(e) for e in graph_.values())
    if components or dynamic:
        print(
            f"import_cycles: {len(components)} cycle(s), {len(dynamic)} unreadable import(s)"
            f" in {len(graph_)} modules",
            file=sys.stderr,
        )
        return 1
    print(f"import_cycles: no cycle in {len(graph_)} modules ({count} imports)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
