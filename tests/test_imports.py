"""The package's import graph, read with `ast` (module level and inside functions): no cycles, and the layers
hold (the data layer never imports results, results never import training, nothing imports the CLI)."""

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
    assert {"gpunet.model", "gpunet.train", "gpunet.cli"} <= set(g)
    assert "gpunet.model" in g["gpunet.train"] and "gpunet.backend" in g["gpunet.model"]


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


DATA_LAYER = ["gpunet.datasets", "gpunet.idx", "gpunet.locate", "gpunet.fetch", "gpunet.files", "gpunet.data"]
RESULTS = ["gpunet.store", "gpunet.evaluate", "gpunet.plots", "gpunet.predict", "gpunet.serve"]


@pytest.mark.parametrize("module, never", [
    *[(m, ["gpunet.store", "gpunet.evaluate", "gpunet.train", "gpunet.plots", "gpunet.cli"]) for m in DATA_LAYER],
    *[(m, ["gpunet.train", "gpunet.cli"]) for m in RESULTS],
    *[(m, ["gpunet.cli"]) for m in ["gpunet.train", "gpunet.config", "gpunet.step", "gpunet.model"]],
])
def test_layers(module, never):
    g, reached, todo = graph(), set(), [module]
    while todo:  # everything `module` imports, directly or through other modules
        for nxt in g[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    assert not reached & set(never), f"{module} imports {sorted(reached & set(never))}"
