"""`gpunet check`: is gpunet right on this machine's device? Every check is a row with a tolerance.

- the environment: versions, CPU, BLAS and its threads, the GPU and its CUDA versions;
- each parameter's gradient against central differences of the loss, in float64 on the device
  (a 64-16-10 net on 8 samples, every entry);
- the device's float32 gradients against the CPU float64 ones (the same net, weights and samples);
- 20 training steps (momentum, cosine learning rate, batches of 64 with a short last one) on the device in
  float32 against the same steps on the CPU in float64;
- where the device records graphs (cuda): the same steps (Adam) replayed as a CUDA graph against eager ones;
- a speed line: samples/s of the 784-128-10 training step at batch 128 and full batch, about a second each,
  on the BLAS threads asked for (`auto`: chosen as `gpunet train` chooses them, before the clock starts).
All data is synthetic, drawn on the host from a seeded generator, so the check needs no dataset.
Relative differences are max|a - b| / max|b| over a parameter (b the reference).
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from gpunet.core.backend import Backend, get_backend
from gpunet.core.model import MLP, one_hot
from gpunet.core.optim import learning_rate, make_optimizer
from gpunet.core.step import TrainStep
from gpunet.core.threads import blas_threads, threads_label
from gpunet.version import __version__

GRAD_SIZES, GRAD_SAMPLES, GRAD_H = (64, 16, 10), 8, 1e-6
STEP_SIZES, STEP_SAMPLES, STEP_BATCH, STEPS = (784, 32, 10), 296, 64, 20  # 4 batches of 64 and one of 40
SPEED_SIZES = (784, 128, 10)
TOLERANCE = {"central": 1e-6, "float32": 1e-4, "steps": 1e-3, "graph": 1e-5}


@dataclass
class Row:
    name: str
    value: float | None  # None: not a finite number
    tolerance: float
    passed: bool
    error: str | None = None  # what raised, when the step could not run


def row(name: str, value: float, tolerance: float) -> Row:
    finite = math.isfinite(value)
    return Row(name, value if finite else None, tolerance, finite and value <= tolerance)


def synthetic(m: int, n_in: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Host features in [0, 1) with a dead input in every 7 (as MNIST's borders) and labels a random linear
    teacher gives them (so training has something to learn)."""
    rng = np.random.default_rng(seed)
    X = rng.random((m, n_in), dtype=np.float32)
    X[:, ::7] = 0
    y = (X @ rng.standard_normal((n_in, 10)).astype(np.float32)).argmax(axis=1).astype(np.int32)
    return X, y


def on_device(backend: Backend, X: np.ndarray, y: np.ndarray) -> tuple[Any, Any, Any]:
    Xd, yd = backend.asarray(X), backend.asarray(y, dtype=np.int32)
    return Xd, one_hot(backend.xp, yd, 10, backend.dtype), yd


def relative(a: Any, b: Any, xp: Any) -> Any:
    """max|a - b| / max|b| as a 0-d array, computed where a and b live."""
    return xp.abs(a - b).max() / xp.abs(b).max()


def central_differences(net: MLP, X: Any, Y: Any, name: str, h: float = GRAD_H) -> Any:
    """dJ/dP for parameter `name`, every entry by (J(P + h) - J(P - h)) / 2h, computed and kept on the device."""
    xp, P = net.backend.xp, net.params[name]
    flat = P.reshape(-1)  # a view: writing it perturbs the net
    G = xp.empty(P.size, P.dtype)
    for i in range(P.size):
        old = flat[i].copy()
        flat[i] += h
        up = net.loss(net.forward(X)[f"A{net.L}"], Y)
        flat[i] -= 2 * h
        down = net.loss(net.forward(X)[f"A{net.L}"], Y)
        flat[i] = old
        G[i] = (up - down) / (2 * h)
    return G.reshape(P.shape)


def gradient_rows(device: str, dev32: Backend, cpu64: Backend) -> list[Row]:
    """Central differences on `device` in float64, and its float32 gradients (`dev32`) against the CPU's."""
    X, y = synthetic(GRAD_SAMPLES, GRAD_SIZES[0], seed=1)
    init = MLP(cpu64, GRAD_SIZES, seed=3).state_dict()
    dev64 = get_backend(device, "float64")
    net = MLP.from_state_dict(dev64, init)
    X64, Y64, _ = on_device(dev64, X, y)
    grads = net.backward(net.forward(X64), Y64)
    errors = [relative(grads[f"d{k}"], central_differences(net, X64, Y64, k), dev64.xp) for k in net.params]
    central = dev64.to_floats(errors)  # one read for all of them
    rows = [row(f"d{k} vs central differences (float64, {dev64.name})", e, TOLERANCE["central"])
            for k, e in zip(net.params, central)]

    ref = MLP.from_state_dict(cpu64, init)
    Xc, Yc, _ = on_device(cpu64, X, y)
    want = ref.backward(ref.forward(Xc), Yc)
    net32 = MLP.from_state_dict(dev32, init)
    X32, Y32, _ = on_device(dev32, X, y)
    got = {k: dev32.to_numpy(v) for k, v in net32.backward(net32.forward(X32), Y32).items()}
    rows.append(row(f"float32 gradients on {dev32.name} vs float64 on cpu", largest_difference(got, want),
                    TOLERANCE["float32"]))
    return rows


def train_steps(backend: Backend, optimizer: str, graph: bool = False) -> dict[str, np.ndarray]:
    """STEPS steps of `optimizer` on the synthetic set, in the training's batches (the same on every device).
    Returns the weights and the summed loss of the last epoch, on the host."""
    X, y = synthetic(STEP_SAMPLES, STEP_SIZES[0], seed=2)
    net = MLP(backend, STEP_SIZES, seed=5)
    step = TrainStep(net, make_optimizer(optimizer, backend, net.params), *on_device(backend, X, y), graph=graph)
    t = 0
    for epoch in range(STEPS // math.ceil(STEP_SAMPLES / STEP_BATCH)):  # 4 epochs of 5 steps
        step.zero_sums()
        for _, idx in step.batches(STEP_BATCH, (0, epoch)):
            step(idx, learning_rate(0.1 if optimizer == "momentum" else 0.01, "cosine", t, STEPS))
            t += 1
    return {**net.state_dict(), "loss_sum": np.atleast_1d(backend.to_numpy(step.loss_sum)).astype(np.float64)}


def difference_text(row: dict[str, Any]) -> str:
    """A check row's value, the relative difference it measured, as the report prints it ("not finite" where
    JSON holds null, "error" where the step raised)."""
    if row["value"] is None:
        return "error" if row.get("error") else "not finite"
    return f"{row['value']:.2e}"


def largest_difference(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    return max(float(relative(got[k].astype(np.float64), want[k], np)) for k in want)


def step_rows(backend: Backend, cpu64: Backend) -> list[Row]:
    """The device's steps against the CPU's in float64; eager against graph replay where the device records."""
    got = train_steps(backend, "momentum")
    rows = [row(f"{STEPS} steps on {backend.name} {backend.dtype} vs cpu float64 (weights, loss)",
                largest_difference(got, train_steps(cpu64, "momentum")), TOLERANCE["steps"])]
    if backend.can_capture:
        rows.append(row(f"{STEPS} steps replayed as a CUDA graph vs eager (adam)",
                        largest_difference(train_steps(backend, "adam", graph=True), train_steps(backend, "adam")),
                        TOLERANCE["graph"]))
    return rows


def speed(backend: Backend, samples: int = 60_000, seconds: float = 2.0, threads: int | str = "auto") -> dict[str, Any]:
    """Samples/s of the training step (momentum) at batch 128 and full batch, each timed for about seconds/2 on
    `threads` BLAS threads; `auto` settles its first choice in untimed steps (a few seconds at most) first."""
    X, y = synthetic(samples, SPEED_SIZES[0], seed=3)
    data = on_device(backend, X, y)
    result: dict[str, Any] = {"samples": samples, "sizes": list(SPEED_SIZES), "dtype": str(backend.dtype),
                              "threads": {}}
    for label, B in (("batch_128", min(128, samples)), ("full_batch", samples)):
        net = MLP(backend, SPEED_SIZES, seed=0)
        step = TrainStep(net, make_optimizer("momentum", backend, net.params), *data)
        perm = backend.permutation(samples, (0, 0))
        batches = [perm[s:s + B] for s in range(0, samples - B + 1, B)] if B < samples else [None]
        blas = blas_threads(threads, backend, B, SPEED_SIZES)
        done = 0
        with blas:
            settle = time.perf_counter() + max(seconds, 3.0)
            while True:  # warm-up: allocates the step's arrays and, for auto, measures until its first choice
                with blas.step():
                    step(batches[done % len(batches)], 0.01)
                done += 1
                if blas.chooser.settled or time.perf_counter() > settle:
                    break
            backend.synchronize()
            done, t0 = 0, time.perf_counter()
            while True:
                for _ in range(10 if B < samples else 1):
                    with blas.step():
                        step(batches[done % len(batches)], 0.01)
                    done += 1
                backend.synchronize()
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds / 2:
                    break
        result[label] = done * B / elapsed
        result["threads"][label] = threads_label(blas.report)
    return result


def environment(backend: Backend) -> dict[str, Any]:
    """Versions, CPU, BLAS and its threads (gpunet.bench.report.machine), and the accelerator."""
    from gpunet.bench.report import machine

    env = {"gpunet": __version__, "platform": platform.platform(), **backend.versions(), **machine(backend, None)}
    return {k: v for k, v in env.items() if v not in ({}, None)}


def run_check(device: str = "auto", samples: int = 60_000, seconds: float = 2.0, threads: int | str = "auto",
              more: Callable[[Backend], list[Row]] | None = None) -> dict[str, Any]:
    """Every check on `device`, then the rows of `more(backend)` (`gpunet check --full`: gpunet.apps.proof's):
    {"device", "description", "environment", "checks": [rows], "graph", "speed", "passed"}; "graph" says
    whether the device records CUDA graphs (and so whether replay was checked)."""
    backend = get_backend(device, "float32")
    cpu64 = get_backend("cpu", "float64")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a broken device shows in the rows
        rows = gradient_rows(device, backend, cpu64) + step_rows(backend, cpu64)
        if more is not None:
            rows += more(backend)
    return {"device": backend.name, "description": backend.describe(), "environment": environment(backend),
            "checks": [asdict(r) for r in rows], "graph": backend.can_capture,
            "speed": speed(backend, samples, seconds, threads), "passed": all(r.passed for r in rows)}


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as aligned text: environment, one row per check, the speed line, the verdict."""
    env = report["environment"]
    width = max(map(len, env))
    lines = [f"gpunet check on {report['description']}", ""]
    lines += [f"  {k:<{width}}  {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in env.items()]
    rows = report["checks"]
    name_w = max(len(r["name"]) for r in rows)
    lines += ["", f"  {'check':<{name_w}}  {'value':>9}  {'tolerance':>9}  result"]
    for r in rows:
        lines.append(f"  {r['name']:<{name_w}}  {difference_text(r):>9}  {r['tolerance']:>9.0e}  "
                     f"{'PASS' if r['passed'] else 'FAIL'}")
    lines += [f"  {r['name']}: {r['error']}" for r in rows if r.get("error")]
    if not report["graph"]:
        lines.append(f"  (CUDA-graph replay: not checked, {report['device']} records no graphs)")
    s = report["speed"]
    lines += ["", f"speed: {s['batch_128']:,.0f} samples/s at batch 128, {s['full_batch']:,.0f} samples/s full batch "
                  f"({s['samples']:,} samples, {'-'.join(map(str, s['sizes']))}, {s['dtype']}, momentum; BLAS threads "
                  f"{s['threads']['batch_128']} at batch 128, {s['threads']['full_batch']} full batch)", ""]
    failed = [r for r in rows if not r["passed"]]
    lines.append(f"all {len(rows)} checks passed" if not failed else f"{len(failed)} of {len(rows)} checks FAILED")
    return lines
