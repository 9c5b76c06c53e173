"""The package's layering, read from the source (imports inside functions count too).

Every module of ours imports only modules below it: the graph of imports has no cycle, and
these rules hold (docs/design.md, "Layers"):

* ``cli`` is the top: only ``__main__`` imports it; ``app`` is imported by nobody (Granian
  loads it by name);
* ``translate``, ``schemas`` and ``_native`` never import the app, the pipeline, the request
  log, an upstream adapter or the registry; ``_native`` imports nothing of ours;
* only ``config.py`` reads the environment (``_native`` too, which must decide at import time
  which implementation to load, before any Settings exist).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "ccproxy"
# the request path and everything above it: what lower layers must never import
UPPER = {
    "ccproxy.app",
    "ccproxy.cli",
    "ccproxy.pipeline",
    "ccproxy.recording",
    "ccproxy.ops",
    "ccproxy.anthropic_api",
    "ccproxy.dashboard_api",
    "ccproxy.upstream.registry",
    "ccproxy.upstream.chat",
    "ccproxy.upstream.responses",
    "ccproxy.upstream.anthropic",
}
LOWER_PACKAGES = ("ccproxy.translate", "ccproxy.schemas", "ccproxy._native")
ENVIRONMENT_READERS = {"ccproxy.config", "ccproxy._native"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def parse_all() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in SRC.rglob("*.py")}


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    package = name.split(".") if name in known and _is_package(name) else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            if candidate in known:
                found.add(candidate)
                break
    found.discard(name)
    return found


def _is_package(name: str) -> bool:
    return (SRC.parent / name.replace(".", "/") / "__init__.py").exists()


TREES = parse_all()
GRAPH = {name: imports(name, tree, set(TREES)) for name, tree in TREES.items()}


def test_the_graph_reads_real_imports():
    # a check of the checker: a few edges that exist
    assert "ccproxy.pipeline" in GRAPH["ccproxy.app"]
    assert "ccproxy.translate.events" in GRAPH["ccproxy.translate.chat_response"]
    assert "ccproxy.upstream.client" in GRAPH["ccproxy.upstream.http_builtin"]


def test_no_module_imports_one_above_it():
    """A topological order exists: no cycle, however long."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [name, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_cli_is_the_top_and_nothing_imports_the_app():
    importers = {name for name, deps in GRAPH.items() if "ccproxy.cli" in deps}
    assert importers <= {"ccproxy.__main__"}
    assert [name for name, deps in GRAPH.items() if "ccproxy.app" in deps] == []


def test_translators_schemas_and_native_stay_below_the_request_path():
    for name, deps in GRAPH.items():
        if name.startswith(LOWER_PACKAGES):
            assert deps.isdisjoint(UPPER), (name, sorted(deps & UPPER))
    for name, deps in GRAPH.items():
        if name.startswith("ccproxy._native"):
            assert {d for d in deps if not d.startswith("ccproxy._native")} == set(), name


def reads_environment(tree: ast.Module) -> bool:
    """Any use of ``os.environ`` or ``os.getenv`` but setting a variable (``os.environ[k] = v``,
    how the ccproxy command hands its workers what they need)."""
    writes = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store)
    }
    return any(
        isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and id(node) not in writes
        for node in ast.walk(tree)
    )


def test_only_settings_read_the_environment():
    readers = {name for name, tree in TREES.items() if reads_environment(tree)}
    assert readers - ENVIRONMENT_READERS == set()
    assert "ccproxy.config" in readers  # (the check sees a real reader)


def test_test_modules_share_helpers_only_through_support():
    """Helpers live in tests/support; no test module imports a test module or a conftest."""
    tests = Path(__file__).resolve().parents[1]
    offenders = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            last_parts = {part for name in names for part in name.split(".")}
            if any(part.startswith("test_") or part == "conftest" for part in last_parts):
                offenders.append(f"{path.relative_to(tests)}:{node.lineno}")
    assert offenders == []
