"""The package's import graph, read with `ast` (module level and inside functions): no cycles, and the layer
folders hold (core imports nothing above it, data never imports runs, nothing imports apps but apps)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "gpunet"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The gpunet modules that `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from gpunet import x` imports gpunet.x when that is a module, else a name of the package.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) - {name} for name, path in files.items()}


def test_the_graph_is_read():
    g = graph()
    assert {"gpunet.core.model", "gpunet.runs.train", "gpunet.apps.cli"} <= set(g)
    assert "gpunet.core.model" in g["gpunet.runs.train"] and "gpunet.core.backend" in g["gpunet.core.model"]


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])


# The layers, lowest first. A module may import its own folder and the folders before it; the foundation
# (gpunet.errors, gpunet.version, gpunet.install, gpunet.files) sits under all of them. bench is a tool beside
# apps: it may import everything but apps, and only apps imports it.
LAYERS = ["core", "data", "runs", "sklearn", "bench", "apps"]
FOUNDATION = {"gpunet", "gpunet.errors", "gpunet.version", "gpunet.install", "gpunet.files"}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def test_every_module_has_a_layer():
    loose = sorted(m for m in graph() if layer(m) is None and m not in FOUNDATION
                   and m.split(".")[1] not in LAYERS and m != "gpunet.__main__")
    assert not loose, f"modules outside the layer folders: {loose}"


def test_the_foundation_imports_no_layer():
    g = graph()
    for module in FOUNDATION - {"gpunet"}:
        assert not {layer(m) for m in g[module]} - {None}, f"{module} imports {sorted(g[module])}"


@pytest.mark.parametrize("folder", LAYERS)
def test_layers(folder):
    """core imports nothing above it, data never imports runs, and nothing imports apps but apps."""
    g = graph()
    allowed = set(LAYERS[:LAYERS.index(folder) + 1])
    for module in (m for m in g if layer(m) == folder):
        above = {m for m in g[module] if layer(m) not in allowed | {None}}
        assert not above, f"{module} imports {sorted(above)}"
