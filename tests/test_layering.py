"""The package layout is the architecture: dependencies point inwards, and nothing imports in a
circle. Read from the source with `ast` (nothing is imported), so a violation fails here before it
confuses anyone.

Layers, inner to outer: records and vocabulary (`domain`, `errors`, `ids`, `frames`) ->
`storage` -> `actors` -> `cluster` -> `push` / `services` -> `http` (REST and the WebSocket edge)
-> `assembly` / `app` / `cli`. `media` is a feature beside them: it uses the vocabulary and the
settings, and `services` and `http` use it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parents[1] / "node"

FORBIDDEN = {
    "node.actors": (
        "node.cluster",
        "node.http",
        "node.services",
        "node.push",
        "node.app",
        "node.assembly",
    ),
    "node.cluster": ("node.http", "node.services", "node.push", "node.app", "node.assembly"),
    "node.push": ("node.actors", "node.http", "node.services", "node.app", "node.assembly"),
    "node.storage": (
        "node.actors",
        "node.cluster",
        "node.http",
        "node.services",
        "node.push",
        "node.app",
    ),
    "node.services": ("node.http", "node.app", "node.assembly"),
    "node.media": (
        "node.actors",
        "node.cluster",
        "node.services",
        "node.http",
        "node.app",
        "node.assembly",
    ),
    "node.domain": ("node.storage", "node.actors", "node.cluster", "node.services", "node.http"),
    "node.errors": ("node.storage", "node.actors", "node.cluster", "node.services", "node.http"),
    "node.ids": ("node.storage", "node.actors", "node.cluster", "node.services", "node.http"),
    "node.frames": ("node.storage", "node.actors", "node.cluster", "node.services", "node.http"),
}


def module_name(path: Path, root: Path = NODE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, root: Path = NODE, runtime_only: bool = False) -> set[str]:
    """The node modules `path` imports (anywhere in the file, or only those that run at import
    time: not under `if TYPE_CHECKING:` and not inside functions)."""
    tree = ast.parse(path.read_text())
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                runtime_only
                and isinstance(child, ast.If)
                and "TYPE_CHECKING" in ast.unparse(child.test)
            ):
                continue
            if runtime_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("node"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                if base.startswith("node"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in child.names)
            visit(child, top)

    visit(tree, True)
    return found


MODULES = {module_name(p): p for p in NODE.rglob("*.py")}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(root: Path, inner: str) -> list[str]:
    """`module imports target` for every import from `inner` that FORBIDDEN refuses."""
    return [
        f"{module_name(path, root)} imports {target}"
        for path in sorted(root.rglob("*.py"))
        if _within(module_name(path, root), inner)
        for target in sorted(imports(path, root=root))
        if any(_within(target, outer) for outer in FORBIDDEN[inner])
    ]


@pytest.mark.parametrize("inner", sorted(FORBIDDEN))
def test_dependencies_point_inwards(inner: str) -> None:
    assert violations(NODE, inner) == []


def test_no_import_cycles() -> None:
    graph = {
        name: {t for t in imports(path, runtime_only=True) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    # a package importing its own submodules in __init__ is not a cycle of ideas
    real = [c for c in cycles if not all(m.startswith(c[0]) or c[0].startswith(m) for m in c)]
    assert real == []


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """The check above can fail: absolute, relative and function-level imports are all seen."""
    root = tmp_path / "node"
    (root / "actors").mkdir(parents=True)
    (root / "actors" / "bad.py").write_text(
        "from node.cluster import keys\n"
        "from ..http import ws\n"
        "def late():\n    import node.services.auth\n"
    )
    assert violations(root, "node.actors") == [
        "node.actors.bad imports node.cluster",
        "node.actors.bad imports node.cluster.keys",
        "node.actors.bad imports node.http",
        "node.actors.bad imports node.http.ws",
        "node.actors.bad imports node.services.auth",
    ]
