"""The shape of the house: no import cycle among thinkrl's modules, no module past ~350 lines (the typed config
excepted), and the README's file list names exactly the modules in the tree."""

from __future__ import annotations

import ast
import re

from helpers import REPO

PACKAGES = ("train", "data", "rewards")
MAX_LINES = 360  # "about 350"; train/config.py, the one typed config, is exempt
EXEMPT = {"train/config.py"}


def _modules() -> dict[str, object]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (function-level imports count: they are cycles
    waiting for the first caller). `from pkg import submodule` is an edge to the submodule."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                submodules = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                graph[name].update(submodules)
                if node.module in modules and node.module != name and len(submodules) < len(node.names):
                    graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules and a.name != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_project_modules():
    graph = import_graph()
    assert "train.evaluate" in graph and "train.builders" in graph["train.evaluate"]  # the graph sees lazy imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_modules_stay_small():
    long = {str(p.relative_to(REPO)): n for p in _modules().values()
            if str(p.relative_to(REPO)) not in EXEMPT and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_readme_file_list_matches_the_tree():
    """Every `name.py` listed under a package in the README's Files block exists, and every module is listed."""
    block = re.search(r"## Files\n\n```\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    listed, package = set(), None
    for line in block.splitlines():
        if re.match(r"^(\w+)/", line):
            package = line.split("/")[0]
        elif line.startswith("  ") and package in PACKAGES:
            names = re.split(r"\s{2,}", line.strip())[0]  # the file column, before the description
            listed.update(f"{package}/{name}" for name in re.findall(r"[\w]+\.py", names))
    present = {str(p.relative_to(REPO)) for p in _modules().values() if p.name != "__init__.py"}
    assert listed == present, f"README lists but tree lacks: {sorted(listed - present)}; tree has but README lacks: {sorted(present - listed)}"
