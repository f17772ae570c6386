"""`gpunet check --full`: the proof for a new machine (a GPU above all), after `gpunet check`'s rows.

Each step is a row of `gpunet.apps.check` (a value against a tolerance, PASS or FAIL); a step that raises is a
FAIL row with its error, and the next step still runs. On synthetic digits (no dataset needed), 784-128-10:
- 2 epochs of `gpunet train`'s loop eagerly, against the same run on the CPU (float32);
- the same 2 epochs with the step replayed as a CUDA graph, against the eager run (where the device records);
- 1 epoch, then a resume to 2 from its checkpoint, against the 2 epochs straight: the same weights, exactly;
- `evaluate` of the saved model against the test accuracy training wrote;
- one request to a running `gpunet serve` (HTTP on 127.0.0.1), against the model's probabilities on the CPU;
- a short bench: one epoch of the bench's gpunet step and of the plain one, which train the same net.
It takes seconds on a GPU and well under a minute on a CPU.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpunet.apps.check import TOLERANCE, Row, largest_difference, row, synthetic
from gpunet.core.backend import Backend, get_backend
from gpunet.core.model import MLP
from gpunet.core.step import GRAPH_ENV
from gpunet.data.datasets import Split
from gpunet.runs.config import load_config

TRAIN, TEST, BATCH = 2048, 512, 128
CLASSES = [str(k) for k in range(10)]


def digits(n: int, seed: int) -> Split:
    """n synthetic 28x28 uint8 images and their labels (check.synthetic's teacher)."""
    X, y = synthetic(n, 784, seed)
    return Split((X * 255).astype(np.uint8).reshape(n, 28, 28), y.astype(np.uint8))


def train_run(backend: Backend, out: Path, epochs: int, graph: bool = False, resume: Path | None = None,
              ) -> dict[str, np.ndarray]:
    """`gpunet train`'s loop (momentum, batch 128, a constant rate, no validation split) into `out`; the last
    epoch's weights."""
    from gpunet.runs.store import load_checkpoint
    from gpunet.runs.train import train

    cfg = replace(load_config(), epochs=epochs, lr=0.1, schedule="constant", val_size=0, dtype=str(backend.dtype))
    before = os.environ.get(GRAPH_ENV)
    os.environ[GRAPH_ENV] = "1" if graph else "0"
    try:
        train(cfg, backend, digits(TRAIN, 11), digits(TEST, 12), out,  # silent: no reporter
              resume=None if resume is None else load_checkpoint(resume / "checkpoint.npz"), classes=CLASSES)
    finally:
        if before is None:
            del os.environ[GRAPH_ENV]
        else:
            os.environ[GRAPH_ENV] = before
    return load_checkpoint(out / "checkpoint.npz").params


def evaluate_saved(backend: Backend, run: Path) -> float:
    """|accuracy of `gpunet evaluate` on the saved model - the test accuracy training wrote|."""
    from gpunet.data.load import DeviceData
    from gpunet.runs.evaluate import evaluate_model
    from gpunet.runs.store import load_model

    net, _ = load_model(run / "model.npz", backend)
    report = evaluate_model(net, DeviceData(backend, digits(TEST, 12)), "synthetic", CLASSES)
    written = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    return abs(report.accuracy - written)


def serve_request(backend: Backend, run: Path) -> float:
    """One POST /api/predict to `gpunet serve` on `backend` (a real server on a free port of 127.0.0.1): the
    largest difference of its probabilities from the model's on the CPU in float64."""
    import uvicorn

    from gpunet.apps.serve import create_app, describe_model, grey_from_json, image_input, listen, server_config
    from gpunet.runs.evaluate import probabilities
    from gpunet.runs.store import load_model

    net, header = load_model(run / "model.npz", backend)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(server_config(create_app(net, describe_model(run / "model.npz", net, header))))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    body = json.dumps({"pixels": (digits(1, 13).images[0] / 255).tolist()}).encode()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.01)
        request = urllib.request.Request(f"http://127.0.0.1:{sock.getsockname()[1]}/api/predict",
                                         body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            got = np.array(json.loads(response.read())["probabilities"])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    cpu, _ = load_model(run / "model.npz", get_backend("cpu", "float64"))
    x = image_input(grey_from_json(body), "request body")  # (28, 28): the server's own preprocessing, on the host
    return float(np.abs(got - probabilities(cpu, x.reshape(1, -1))[0]).max())


def short_bench(backend: Backend) -> float:
    """One epoch at batch 128 of the bench's gpunet step and of its plain NumPy/CuPy one, from the same weights:
    the relative difference of their losses."""
    from gpunet.bench.contenders import Gpunet, Plain
    from gpunet.data.load import DeviceData

    data = DeviceData(backend, digits(TRAIN, 11))
    init = MLP(backend, seed=0).state_dict()
    (a, _), (b, _) = (runner(backend, data, BATCH, init, False).epoch(0) for runner in (Gpunet, Plain))
    return abs(a - b) / abs(b)


def attempt(name: str, tolerance: float, measure: Callable[[], float]) -> Row:
    """The row of one step; a step that raises fails with its error."""
    try:
        return row(name, measure(), tolerance)
    except Exception as e:  # noqa: BLE001  a broken device shows as a FAIL row, and the other steps still run
        return Row(name, None, tolerance, False, f"{type(e).__name__}: {e}")


def full_rows(backend: Backend) -> list[Row]:
    """The steps above on `backend` (float32), each a row."""
    cpu = get_backend("cpu")
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpunet-check-") as tmp:
        d = Path(tmp)

        def eager() -> float:
            runs["eager"] = train_run(backend, d / "eager", 2)
            return largest_difference(runs["eager"], train_run(cpu, d / "cpu", 2))

        rows = [attempt(f"2 epochs of train on {backend.name} vs cpu (weights)", TOLERANCE["steps"], eager)]
        if backend.can_capture:
            rows.append(attempt("2 epochs of train as a CUDA graph vs eager (weights)", TOLERANCE["graph"],
                                lambda: largest_difference(train_run(backend, d / "graph", 2, graph=True),
                                                           runs["eager"])))

        def resumed() -> float:
            train_run(backend, d / "resumed", 1)
            return largest_difference(train_run(backend, d / "resumed", 2, resume=d / "resumed"), runs["eager"])

        rows += [attempt("1 epoch, resumed to 2 vs 2 straight (weights)", 0.0, resumed),
                 attempt("evaluate the saved model vs its training metrics (accuracy)", 0.0,
                         lambda: evaluate_saved(backend, d / "eager")),
                 attempt("one serve request vs the model on cpu float64 (probabilities)", TOLERANCE["float32"],
                         lambda: serve_request(backend, d / "eager")),
                 attempt("bench: 1 epoch of gpunet's step vs the plain one (loss)", TOLERANCE["float32"],
                         lambda: short_bench(backend))]
    return rows
