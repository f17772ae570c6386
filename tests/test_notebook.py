"""notebooks/walkthrough.ipynb: stored without outputs, and runs from top to bottom on the CPU, on the strict
device (tests/strict.py, which refuses implicit host transfers) and, where one is usable, on a CUDA GPU."""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra is not installed: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the test extra is not installed: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
DEVICE_LINE = 'device = "cpu"'


def notebook(device: str = "cpu", before: str = "", after: str = ""):
    """The notebook with its device line set to `device`, and cells of code added before and after."""
    nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source.startswith(DEVICE_LINE), "the first code cell must start by naming the device"
    first.source = first.source.replace(DEVICE_LINE, f'device = "{device}"', 1)
    if before:
        nb.cells.insert(0, nbformat.v4.new_code_cell(before))
    if after:
        nb.cells.append(nbformat.v4.new_code_cell(after))
    return nb


def execute(nb):
    """Run every cell in a fresh kernel (a cell over 60 s, or one that raises, fails the test)."""
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_notebook_is_stored_without_outputs():
    raw = json.loads(NOTEBOOK.read_text())
    code = [c for c in raw["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 8
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_notebook_runs_on_the_cpu():
    out = execute(notebook("cpu"))
    assert "cpu (NumPy" in out
    assert "A2  (64, 10)" in out and "dW1: relative error" in out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 85


STRICT = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import gpunet.core.backend
from devices.strict import StrictBackend

made, real_get_backend = [], gpunet.core.backend.get_backend

def get_backend(device="auto", dtype="float32"):
    if device == "cpu":
        return real_get_backend(device, dtype)
    made.append(StrictBackend(dtype))
    return made[-1]

gpunet.core.backend.get_backend = get_backend
"""


def test_notebook_runs_on_the_strict_device():
    """The same cells with `device = "cuda"` on the strict device: every host read goes through to_numpy."""
    out = execute(notebook("cuda", before=STRICT,
                           after='print("strict devices", len(made), "refused", [r for b in made for r in b.ledger.refused])'))
    assert "strict (NumPy" in out and "test accuracy" in out
    assert "strict devices 2 refused []" in out


@pytest.mark.gpu
def test_notebook_runs_on_the_gpu(real_gpu):
    out = execute(notebook("cuda"))
    assert "cuda (" in out and "test accuracy" in out
