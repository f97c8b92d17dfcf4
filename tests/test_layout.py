"""The house rules of the layout, checked on the source with `ast` (no third-party tool):
no import cycles between the project's modules, `nets` imports nothing from `utils`, and the
floors of `utils` import only downwards (scripts -> ablation -> engine -> eval -> infer ->
data, config, viz -> nets).

An edge is a module naming another in an import statement, at any depth (imports inside
functions count too: a cycle hidden in a function is still a cycle).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nets", "utils")
# Each floor may import its own floor and the ones below it, never one above.
FLOORS = {
    "nets": 0,
    "utils.data": 1, "utils.viz": 1, "utils.config": 1, "utils.device": 1,
    "utils.infer": 2, "utils.export": 2,
    "utils.eval": 3,
    "utils.engine": 4,
    "utils.ablation": 5, "utils.api": 5,
}


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    for path in ROOT.glob("*.py"):
        mods[path.stem] = path
    return mods


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules that `name` imports. `from pkg import sub` is an edge to `pkg.sub` alone, and
    importing `a.b.c` is not an edge to the packages `a` and `a.b` (Python initialises them, but
    an `__init__` that re-exports is not a dependency of the module asking for `a.b.c`)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in mods)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in mods]
            if subs:
                out.update(subs)
            if len(subs) < len(node.names) and module in mods:
                out.add(module)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imported(name, path, mods) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (iterative DFS, three colours)."""
    colour = dict.fromkeys(graph, 0)
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def floor(module: str) -> int | None:
    for prefix, level in sorted(FLOORS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_sees_imports_inside_functions(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from nets.yolo import YoloBody\n    import utils.config\n")
    mods = {"nets.yolo": path, "utils.config": path, "m": path}
    assert imported("m", path, mods) == {"nets.yolo", "utils.config"}


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nets_imports_nothing_from_utils():
    bad = sorted(f"{m} -> {d}" for m, deps in import_graph().items() if m.split(".")[0] == "nets"
                 for d in deps if d.split(".")[0] == "utils")
    assert not bad, "nets must not import utils: " + ", ".join(bad)


def test_utils_imports_only_downwards():
    bad = []
    for module, deps in import_graph().items():
        own = floor(module)
        if own is None or not module.startswith("utils"):
            continue
        for dep in deps:
            level = floor(dep)
            if level is not None and level > own:
                bad.append(f"{module} (floor {own}) -> {dep} (floor {level})")
    assert not bad, "upward imports: " + "; ".join(sorted(bad))


@pytest.mark.parametrize("package", ["nets", "utils"])
def test_every_module_has_a_floor(package):
    missing = sorted(m for m in project_modules() if m.startswith(package) and m != "utils" and floor(m) is None)
    assert not missing, f"modules outside the floors of tests/test_layout.py: {missing}"


def test_no_library_code_imported_from_scripts():
    """Entry scripts are leaves: nothing in the library, the benchmarks or the tests imports one."""
    scripts = {p.stem for p in ROOT.glob("*.py")}
    users = []
    for folder in ("nets", "utils", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
                users += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n in scripts]
    assert not users, "; ".join(users)
