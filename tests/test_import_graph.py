"""No import cycles inside ``jaxcnn``, and ``import jaxcnn`` works in a fresh process.

The graph is read from the source (``ast``), not from what happens to be imported: every
``import`` and ``from ... import`` statement of every module under ``jaxcnn/``, at module level or
inside a function (a deferred import that closes a loop is a cycle waiting for a caller), relative
ones resolved against the module's package. ``from P import N`` is an edge to the module ``P.N``
where that module exists, else to ``P``. Importing a module also runs its parent packages'
``__init__``; those implicit edges are left out, as import linters do, since Python runs a parent
first and a child's import of it finds it under way without a loop.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "jaxcnn"


def module_files(root: str, package: str) -> dict[str, str]:
    """``{dotted module name: file path}`` for every ``.py`` file of ``package`` under ``root``."""
    out = {}
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        parts = os.path.relpath(folder, root).split(os.sep)
        for f in sorted(files):
            if f.endswith(".py"):
                name = parts if f == "__init__.py" else [*parts, f[:-3]]
                out[".".join(name)] = os.path.join(folder, f)
    return out


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``source`` (the text of ``module``) imports, anywhere in the file."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            for alias in node.names:
                child = f"{parent}.{alias.name}"
                found.add(child if child in known else parent)
    edges = set()
    for name in found:
        while name and name not in known:   # `import a.b.c` of a name inside a.b: the module a.b
            name = name.rpartition(".")[0]
        if name and name != module:
            edges.add(name)
    return edges


def import_graph(root: str = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root, package)
    known = set(files)
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            graph[module] = imports_of(module, f.read(), path.endswith("__init__.py"), known)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per strongly connected component that has one (Tarjan's algorithm,
    iterative), in a stable order."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                    if len(component) > 1:
                        components.append(set(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return [_cycle_through(graph, component) for component in sorted(components, key=min)]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle from the component's first module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    return paths[node] + [start]
                if child in component and child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


# ---------------------------------------------------------------- the tests

def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "jaxcnn.cpu.policy" in graph and "jaxcnn.models.registry" in graph
    assert "jaxcnn.cpu.policy" in graph["jaxcnn.cpu.ops"]   # the walk sees the package's own imports
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_registry_is_a_leaf_of_the_package():
    assert not {m for m in import_graph()["jaxcnn.models.registry"] if m.startswith("jaxcnn.")}


def test_the_cycle_finder_names_cycles_in_a_small_graph():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"e2"}, "e2": {"e"}}) == [
        ["a", "b", "c", "a"], ["e", "e2", "e"]]
    # the shortest way back through a component with two loops
    assert find_cycles({"a": {"x", "b"}, "x": {"y"}, "y": {"a"}, "b": {"a"}}) == [["a", "b", "a"]]


def test_the_walk_resolves_relative_deferred_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import leaf\n")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\nfrom .leaf import f\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from ..top import g\n    return g\n")
    (pkg / "top.py").write_text("import pkg.sub.leaf as leaf\nfrom pkg import sub\n")
    graph = import_graph(str(tmp_path), "pkg")
    assert graph == {"pkg": {"pkg.sub.leaf"}, "pkg.sub": {"pkg.sub.leaf"}, "pkg.sub.leaf": {"pkg.top"},
                     "pkg.top": {"pkg.sub.leaf", "pkg.sub"}}
    assert find_cycles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.top", "pkg.sub"]]


def test_import_jaxcnn_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run = subprocess.run([sys.executable, "-c", "import jaxcnn; print(len(jaxcnn.list_models()))"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert int(run.stdout.split()[-1]) > 20
