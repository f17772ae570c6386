"""`gpunet bench`: gpunet's training step against a plain NumPy (or CuPy) reference and PyTorch.

Every contender trains the same 784-h-10 net from the same initial weights on the same device-resident
data with the same recipe: momentum SGD (lr 0.1, mu 0.9) on shuffled mini-batches, plain gradient descent
for the full batch; each step also accumulates the train loss and accuracy on the device, and each epoch
ends with one read of them to the host (which also synchronises the device before the clock is read).
- gpunet: `gpunet.step.TrainStep`, the step `gpunet train` runs (not a copy of it).
- numpy (cupy on cuda): the same equations written the textbook way, a new array for every result.
- pytorch, when importable (never a dependency): nn.Linear layers, cross_entropy, torch.optim.SGD, batches
  sliced from tensors (no DataLoader).
After one warm-up epoch each, the contenders take turns epoch by epoch (the order rotates), and the table
shows medians. FLOPs are those of the matrix products (forward 2*m*(784h + 10h), backward the same again
less the gradient w.r.t. the pixels); the sgemm rate is measured on the same backend at the step's shapes,
and the GEMM floor is the time those products alone take per epoch. Peak memory: each contender runs again
in a fresh subprocess (warm-up and one epoch) that reports its peak RSS on the CPU, or its memory pool's
size (CuPy) / peak reserved memory (PyTorch) on a GPU.

`--whole-run` times complete training runs of a config's recipe instead (`run_whole`): gpunet through
`gpunet.train.train`, the function `gpunet train` runs, and PyTorch with the same recipe (`torch_run`).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rich.console import Console
from rich.table import Table

from gpunet.backend import Backend, get_backend, gpu_info
from gpunet.config import Config, load_config
from gpunet.datasets import NUM_CLASSES, Split
from gpunet.errors import GpunetError
from gpunet.model import MLP
from gpunet.optim import learning_rate, make_optimizer
from gpunet.step import TrainStep

CONTENDERS = ("gpunet", "numpy", "pytorch")
LR, MOMENTUM = 0.1, 0.9


def parse_batch_sizes(text: str) -> list[int | str]:
    """'128,1024,full' -> [128, 1024, 'full']."""
    sizes: list[int | str] = []
    for part in text.split(","):
        part = part.strip()
        if part == "full" or (part.isdigit() and int(part) >= 1):
            sizes.append(part if part == "full" else int(part))
        else:
            raise GpunetError(f"--batch-sizes {text!r}: give positive integers or 'full', e.g. 128,1024,full")
    return sizes


def parse_contenders(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in names if c not in CONTENDERS]
    if bad or not names:
        raise GpunetError(f"--contenders {text!r}: choose among {', '.join(CONTENDERS)}")
    return names


def load_data(backend: Backend, limit: int) -> Any:
    from gpunet.data import DeviceData, load_mnist

    return DeviceData(backend, load_mnist()[0], limit)


def gemm_flops(m: int, sizes: tuple[int, ...]) -> float:
    """FLOPs of one training pass over m samples: forward, dW and dA products, no gradient w.r.t. the input."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2.0 * m * (2 * sum(a * b for a, b in pairs) + sum(a * b for a, b in pairs[1:]))


class Gpunet:
    """gpunet's own training step."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool):
        self.backend, self.data, self.B = backend, data, B
        self.net = MLP.from_state_dict(backend, init)
        self.opt = make_optimizer("gd" if B == data.m else "momentum", backend, self.net.params, MOMENTUM)
        self.step = TrainStep(self.net, self.opt, data.X, data.Y, data.y, graph=graph)

    def epoch(self, e: int) -> tuple[float, float]:
        m, B = self.data.m, self.B
        steps = math.ceil(m / B)
        perm = None if steps == 1 else self.backend.permutation(m, (0, e))
        loss_sum, correct = self.step.zero_sums()
        for s in range(steps):
            self.step(None if perm is None else perm[s * B:(s + 1) * B], LR)
        loss, acc = self.backend.to_numpy(self.backend.xp.stack([loss_sum / m, correct / m])).tolist()
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()


class Plain:
    """The reference: the same equations in plain array code, a new array for every result."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool):
        self.backend, self.data, self.B = backend, data, B
        self.p = {k: backend.asarray(np.array(v)) for k, v in init.items()}  # a copy: `init` is shared
        self.v = {k: backend.xp.zeros_like(v) for k, v in self.p.items()}
        self.mu = 0.0 if B == data.m else MOMENTUM

    def epoch(self, e: int) -> tuple[float, float]:
        xp, d, B, p = self.backend.xp, self.data, self.B, self.p
        steps = math.ceil(d.m / B)
        perm = None if steps == 1 else self.backend.permutation(d.m, (0, e))
        loss_sum, correct = xp.zeros((), d.X.dtype), xp.zeros((), xp.int64)
        tiny = np.finfo(d.X.dtype).tiny
        for s in range(steps):
            if perm is None:
                X, Y, y = d.X, d.Y, d.y
            else:
                idx = perm[s * B:(s + 1) * B]
                X, Y, y = d.X[idx], d.Y[idx], d.y[idx]
            m = X.shape[0]
            Z1 = X @ p["W1"] + p["b1"]
            A1 = xp.maximum(Z1, 0)
            Z2 = A1 @ p["W2"] + p["b2"]
            E = xp.exp(Z2 - Z2.max(axis=1, keepdims=True))
            A2 = E / E.sum(axis=1, keepdims=True)
            loss_sum += -(Y * xp.log(xp.maximum(A2, tiny))).sum()
            correct += (A2.argmax(axis=1) == y).sum()
            dZ2 = (A2 - Y) / m
            dZ1 = (dZ2 @ p["W2"].T) * (Z1 > 0)
            grads = {"W2": A1.T @ dZ2, "b2": dZ2.sum(axis=0), "W1": X.T @ dZ1, "b1": dZ1.sum(axis=0)}
            for k, dP in grads.items():
                self.v[k] = self.mu * self.v[k] + dP
                p[k] -= LR * self.v[k]
        loss, acc = self.backend.to_numpy(xp.stack([loss_sum / d.m, correct / d.m])).tolist()
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()


class Torch:
    """PyTorch eager, the fast way: tensors on the device, batches sliced by index, no DataLoader. The
    optimizer is the bench's (momentum SGD, plain GD for the full batch) unless `optimizer` names one."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool = False,
                 optimizer: str | None = None, momentum: float = MOMENTUM):
        import torch

        self.torch, self.B, self.m = torch, B, data.m
        self.dev = torch.device("cuda" if backend.name == "cuda" else "cpu")
        self.dtype = getattr(torch, np.dtype(backend.dtype).name)
        self.X, self.y = self.tensors(backend, data)
        L = len(init) // 2
        layers: list[Any] = []
        for l in range(1, L + 1):
            layers += [torch.nn.Linear(*init[f"W{l}"].shape), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(self.dev, self.dtype)  # no ReLU after the last layer
        with torch.no_grad():
            for l in range(1, L + 1):
                layer = self.model[2 * (l - 1)]
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(init[f"W{l}"].T)))
                layer.bias.copy_(torch.from_numpy(init[f"b{l}"]))
        optimizer = optimizer or ("gd" if B == data.m else "momentum")
        params = self.model.parameters()
        if optimizer == "adam":  # the same update as gpunet.optim.Adam (betas 0.9, 0.999; eps 1e-8)
            self.opt = torch.optim.Adam(params, lr=LR, betas=(0.9, 0.999), eps=1e-8)
        else:
            self.opt = torch.optim.SGD(params, lr=LR, momentum=momentum if optimizer == "momentum" else 0.0)
        self.gen = torch.Generator(device=self.dev)

    def tensors(self, backend: Backend, data: Any) -> tuple[Any, Any]:
        """(X, y) of `data` as tensors: on the CPU sharing the gpunet arrays' memory; on a GPU copied once."""
        X = self.torch.from_numpy(backend.to_numpy(data.X)).to(self.dev)
        return X, self.torch.from_numpy(backend.to_numpy(data.y).astype(np.int64)).to(self.dev)

    def epoch(self, e: int, lr: float | list[float] = LR, test: tuple[Any, Any] | None = None) -> list[float]:
        """One epoch (shuffle seeded with `e`) at `lr`, or lr[s] for step s. Returns the train loss and accuracy,
        then the test loss and accuracy on `test` = (X, y) when given: one read from the device."""
        torch, B, m = self.torch, self.B, self.m
        F = torch.nn.functional
        steps = math.ceil(m / B)
        lrs = lr if isinstance(lr, list) else [lr] * steps
        self.gen.manual_seed(e)
        perm = None if steps == 1 else torch.randperm(m, device=self.dev, generator=self.gen)
        loss_sum = torch.zeros((), dtype=self.dtype, device=self.dev)
        correct = torch.zeros((), dtype=torch.int64, device=self.dev)
        for s in range(steps):
            if perm is None:
                X, y = self.X, self.y
            else:
                idx = perm[s * B:(s + 1) * B]
                X, y = self.X[idx], self.y[idx]
            for group in self.opt.param_groups:
                group["lr"] = lrs[s]
            logits = self.model(X)
            loss = F.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * y.shape[0]
                correct += (logits.argmax(dim=1) == y).sum()
        sums = [loss_sum / m, correct / m]
        if test is not None:
            with torch.no_grad():
                logits = self.model(test[0])
                sums += [F.cross_entropy(logits, test[1]), (logits.argmax(dim=1) == test[1]).double().mean()]
        return torch.stack([t.double() for t in sums]).tolist()

    def peak_device_bytes(self) -> int:
        return self.torch.cuda.max_memory_reserved()


KINDS = {"gpunet": Gpunet, "numpy": Plain, "pytorch": Torch}


def gemm_floor(backend: Backend, B: int, m: int, sizes: tuple[int, ...],
               min_seconds: float = 0.3) -> tuple[float, float]:
    """(sgemm GFLOP/s at the step's shapes, seconds per epoch of those products alone), on `backend`."""
    xp, dt = backend.xp, backend.dtype
    rng = np.random.default_rng(0)
    A = [backend.asarray(rng.random((B, n))) for n in sizes]  # activations A0 .. AL, also used as dZ
    W = [backend.asarray(rng.random((a, b))) for a, b in zip(sizes[:-1], sizes[1:])]
    out = {}

    def products() -> None:
        for l, Wl in enumerate(W, start=1):
            out[f"Z{l}"] = xp.matmul(A[l - 1], Wl, out=out.get(f"Z{l}", xp.empty((B, Wl.shape[1]), dt)))
            out[f"dW{l}"] = xp.matmul(A[l - 1].T, A[l], out=out.get(f"dW{l}", xp.empty(Wl.shape, dt)))
            if l > 1:
                out[f"dA{l}"] = xp.matmul(A[l], Wl.T, out=out.get(f"dA{l}", xp.empty((B, Wl.shape[0]), dt)))

    products()
    backend.synchronize()
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 1000):
        t0 = time.perf_counter()
        products()
        backend.synchronize()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    rate = gemm_flops(B, sizes) / per_step
    return rate / 1e9, gemm_flops(m, sizes) / rate


def machine(backend: Backend, torch_threads: int | None) -> dict[str, Any]:
    """CPU model and cores, BLAS library and threads, GPU, load: what the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or platform.machine()
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        info["blas"] = "; ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture', '?')} kernels, "
                                 f"{p.get('num_threads')} threads)" for p in pools) or "unknown"
    except ImportError:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        info["blas"] = f"{blas.get('name', 'unknown')} {blas.get('version', '')} (threads: install threadpoolctl)"
    info["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                             "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    if torch_threads is not None:
        import torch

        info["pytorch"] = f"{torch.__version__} ({torch_threads} threads)"
    if backend.name == "cuda":
        g = gpu_info(backend.xp)
        info["gpu"] = f"{g['name']}, {g['memory_gib']} GiB, CUDA runtime {g['cuda_runtime']}"
        info["cupy"] = backend.xp.__version__
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def take_turns(tasks: dict[str, Callable[[int], Any]], rounds: int, warmup: int) -> tuple[dict[str, list[float]],
                                                                                         dict[str, list[Any]]]:
    """Warm up each task (calls rounds+1 .. rounds+warmup), then time calls 1..rounds of each, taking turns
    in a rotating order. Each call must end with a host read (which synchronises the device).
    Returns the times and the results of the timed calls."""
    names = list(tasks)
    for task in tasks.values():
        for i in range(warmup):
            task(rounds + 1 + i)
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, list[Any]] = {n: [] for n in names}
    for i in range(1, rounds + 1):
        k = (i - 1) % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            results[n].append(tasks[n](i))
            times[n].append(time.perf_counter() - t0)
    return times, results


def peak_memory(name: str, device: str, batch: int | str, limit: int, graph: bool) -> dict[str, float]:
    """Run `name` in a fresh subprocess (set-up, warm-up and two epochs) and return its peak memory in MiB:
    "train" while training (with the data loaded: the table's figure) and "process" over the whole process
    (the CPU only: this includes the transient peak of decoding MNIST, the same for every contender)."""
    args = json.dumps({"name": name, "device": device, "batch": batch, "limit": limit, "graph": graph})
    proc = subprocess.run([sys.executable, "-c", f"from gpunet.bench import memory_child; memory_child({args!r})"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GpunetError(f"the memory run of {name} at batch {batch} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_peak_mib() -> float:
    """This process's peak RSS (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def memory_child(args_json: str) -> None:
    """Subprocess side of `peak_memory`: prints {"train": MiB, "process": MiB}."""
    a = json.loads(args_json)
    backend = get_backend(a["device"])
    data = load_data(backend, a["limit"])
    B = data.m if a["batch"] == "full" else min(int(a["batch"]), data.m)
    runner = KINDS[a["name"]](backend, data, B, MLP(backend, seed=0).state_dict(), a["graph"])
    out: dict[str, float] = {}
    if backend.name == "cpu":
        out["process"] = _rss_peak_mib()
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart VmHWM from the current RSS
    for e in range(3):
        runner.epoch(e)
    out["train"] = runner.peak_device_bytes() / 2**20 if backend.name == "cuda" else _rss_peak_mib()
    if backend.name == "cpu":
        out["process"] = max(out["process"], out["train"])
    print(json.dumps({k: round(v, 1) for k, v in out.items()}))


def run_bench(device: str = "cpu", batch_sizes: str = "128,1024,full", epochs: int = 5, limit: int = 0,
              contenders: str = ",".join(CONTENDERS), memory: bool = True, graph: bool = False,
              json_out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Time the contenders at each batch size, print the tables, optionally write JSON; return the report."""
    console = wide(console)
    if epochs < 1:
        raise GpunetError("--epochs must be at least 1")
    sizes_asked = parse_batch_sizes(batch_sizes)
    backend = get_backend(device)
    if backend.dtype != np.float32:
        raise GpunetError("gpunet bench runs float32")
    names, skipped, torch_threads = usable_contenders(parse_contenders(contenders), backend)
    data = load_data(backend, limit)
    init = MLP(backend, seed=0).state_dict()
    sizes = tuple(w.shape[0] for w in (init["W1"], init["W2"])) + (init["W2"].shape[1],)
    report: dict[str, Any] = {
        "mode": "epoch", "machine": machine(backend, torch_threads), "device": backend.name, "samples": data.m,
        "epochs": epochs,
        "sizes": list(sizes), "cuda_graph": graph and backend.name == "cuda", "skipped": skipped, "results": [],
    }
    for batch in sizes_asked:
        B = data.m if batch == "full" else min(batch, data.m)
        console.print(f"batch {batch}: timing {', '.join(names)} ({epochs} epochs each after a warm-up)")
        runners = {n: KINDS[n](backend, data, B, init, graph) for n in names}
        times, stats = take_turns({n: r.epoch for n, r in runners.items()}, epochs,
                                 warmup=1 if math.ceil(data.m / B) >= 3 else 3)
        del runners
        sgemm, floor = gemm_floor(backend, B, data.m, sizes)
        mem = {n: peak_memory(n, backend.name, batch, limit, graph) for n in names} if memory else {}
        flops = gemm_flops(data.m, sizes)
        ref = statistics.median(times["pytorch"]) if "pytorch" in times else None
        for n in names:
            sec = statistics.median(times[n])
            report["results"].append({
                "batch": batch, "contender": n, "seconds_per_epoch": sec, "epoch_seconds": times[n],
                "samples_per_second": data.m / sec, "ratio_to_pytorch": sec / ref if ref else None,
                "gflop_per_epoch": flops / 1e9, "gflops": flops / sec / 1e9, "sgemm_gflops": sgemm,
                "fraction_of_sgemm": flops / sec / 1e9 / sgemm, "gemm_floor_seconds": floor,
                "ratio_to_gemm_floor": sec / floor, "train_loss": stats[n][-1][0],
                "peak_mib": mem[n]["train"] if memory else None,
                "peak_process_mib": mem[n].get("process") if memory else None,
            })
    print_report(report, console)
    write_json_report(report, json_out)
    return report


def wide(console: Console | None) -> Console:
    """The console to print on; one that writes to a file or a pipe gets room for the whole table."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    return console


def usable_contenders(names: list[str], backend: Backend) -> tuple[list[str], list[str], int | None]:
    """(the contenders that can run, a line for each one skipped, PyTorch's thread count when it runs)."""
    names, skipped = list(names), []
    if "pytorch" in names:
        reason = None
        if importlib.util.find_spec("torch") is None:
            reason = "not installed (pip install torch)"
        elif backend.name == "cuda":
            import torch

            if not torch.cuda.is_available():
                reason = "installed without CUDA support"
        if reason:
            names.remove("pytorch")
            skipped.append(f"pytorch skipped: {reason}")
    torch_threads = None
    if "pytorch" in names:
        import torch

        torch_threads = torch.get_num_threads()
    return names, skipped, torch_threads


def write_json_report(report: dict[str, Any], json_out: Path | None) -> None:
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")


def print_machine(m: dict[str, Any], console: Console) -> None:
    t = Table(title="machine", show_header=False)
    for key in ("cpu", "cores", "blas", "pytorch", "gpu", "cupy", "numpy", "python", "env", "load_average"):
        if key in m and m[key] not in (None, {}):
            t.add_row(key, str(m[key]))
    console.print(t)


def print_report(report: dict[str, Any], console: Console) -> None:
    print_machine(report["machine"], console)
    memory = "peak GPU MiB" if report["device"] == "cuda" else "peak RSS MiB"  # while training
    r = Table(title=f"training epoch on {report['device']}: {report['samples']} samples, "
                    f"{'-'.join(map(str, report['sizes']))}, float32, median of {report['epochs']} epochs"
                    + (", CUDA graph" if report["cuda_graph"] else ""))
    for col in ("batch", "contender", "s/epoch", "samples/s", "vs pytorch", "GFLOP/s", "% sgemm", "x GEMM floor",
                memory, "train loss"):
        r.add_column(col, justify="left" if col in ("batch", "contender") else "right")
    for row in report["results"]:
        r.add_row(str(row["batch"]), row["contender"], f"{row['seconds_per_epoch']:.4f}",
                  f"{row['samples_per_second']:,.0f}",
                  "-" if row["ratio_to_pytorch"] is None else f"{row['ratio_to_pytorch']:.2f}x",
                  f"{row['gflops']:.1f}", f"{100 * row['fraction_of_sgemm']:.0f}%",
                  f"{row['ratio_to_gemm_floor']:.2f}", "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}",
                  f"{row['train_loss']:.4f}")
    console.print(r)
    floors = {row["batch"]: (row["sgemm_gflops"], row["gemm_floor_seconds"]) for row in report["results"]}
    console.print("GEMM floor: " + "; ".join(f"batch {b}: sgemm {g:.0f} GFLOP/s at the step's shapes, "
                                             f"{s:.4f} s/epoch" for b, (g, s) in floors.items()))
    for line in report["skipped"]:
        console.print(line)


WHOLE_RUN_CONTENDERS = ("gpunet", "pytorch")
WHOLE_RUN_INCLUDES = ("each timed run starts from the decoded MNIST arrays on the host (read once, shared, "
                      "not timed) and includes copying them to the device as features, the initial weights, every "
                      "epoch's steps and test-set evaluation with one read per epoch; gpunet's also includes writing "
                      "its run directory (model.npz at each logged epoch, metrics.json, checkpoint.npz), as "
                      "`gpunet train` does")


def gpunet_run(cfg: Config, backend: Backend, train_split: Split, test_split: Split) -> dict[str, float]:
    """One complete `gpunet.train.train` run of `cfg` into a temporary run directory, console silenced."""
    from gpunet.train import train

    with tempfile.TemporaryDirectory(prefix="gpunet-bench-") as tmp:
        metrics = train(cfg, backend, train_split, test_split, Path(tmp) / "run", Console(file=io.StringIO()))
    return {"test_accuracy": metrics["test_accuracy"], "epoch_seconds": metrics["train_seconds"]}


def torch_run(cfg: Config, backend: Backend, train_split: Split, test_split: Split) -> dict[str, float]:
    """The recipe of `cfg` in PyTorch, as `train` runs it: the same initial weights and network, the optimizer,
    the per-step learning rate of `gpunet.optim.learning_rate`, the batch size, a fresh shuffle each epoch
    (torch.randperm, seeded from the config's seed and the epoch), train sums on the device and a test-set evaluation
    each epoch, read once per epoch."""
    from gpunet.data import DeviceData

    tr, te = DeviceData(backend, train_split, cfg.limit), DeviceData(backend, test_split)
    init = MLP(backend, (tr.X.shape[1], *cfg.hidden, NUM_CLASSES), seed=cfg.seed).state_dict()
    B = tr.m if cfg.batch_size == "full" else min(cfg.batch_size, tr.m)
    runner = Torch(backend, tr, B, init, optimizer=cfg.optimizer, momentum=cfg.momentum)
    test = runner.tensors(backend, te)
    steps = math.ceil(tr.m / B)
    seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lrs = [learning_rate(cfg.lr, cfg.schedule, (epoch - 1) * steps + s, cfg.epochs * steps)
               for s in range(steps)]
        stats = runner.epoch(cfg.seed * 1_000_000 + epoch, lrs, test)
        seconds += time.perf_counter() - t0
    return {"test_accuracy": stats[3], "epoch_seconds": seconds}


def run_whole(device: str = "cpu", config: Path | None = None, epochs: int | None = None, limit: int | None = None,
              contenders: str = ",".join(WHOLE_RUN_CONTENDERS), repeats: int = 3, json_out: Path | None = None,
              console: Console | None = None) -> dict[str, Any]:
    """Time complete training runs of the recipe in `config` (a config name or path, default 'default'; `epochs` and
    `limit` override it) for gpunet and PyTorch: one warm-up run each, then `repeats` runs each, taking turns.
    Prints the table, optionally writes JSON; returns the report."""
    from gpunet.data import load_mnist

    console = wide(console)
    if repeats < 1:
        raise GpunetError("--repeats must be at least 1")
    cfg = load_config(config, {"epochs": epochs, "limit": limit})
    backend = get_backend(device, cfg.dtype)
    asked = [n for n in parse_contenders(contenders) if n in WHOLE_RUN_CONTENDERS]  # numpy has no whole run
    names, skipped, torch_threads = usable_contenders(asked, backend)
    if not names:
        raise GpunetError(f"--contenders {contenders!r}: --whole-run times {' and '.join(WHOLE_RUN_CONTENDERS)}")
    train_split, test_split = load_mnist()
    runs = {"gpunet": gpunet_run, "pytorch": torch_run}
    console.print(f"whole run of {config or 'default'}: timing {', '.join(names)} "
                  f"({repeats} runs each after a warm-up run)")
    tasks = {n: (lambda i, run=runs[n]: run(cfg, backend, train_split, test_split)) for n in names}
    times, results = take_turns(tasks, repeats, warmup=1)
    ref = statistics.median(times["pytorch"]) if "pytorch" in times else None
    report: dict[str, Any] = {
        "mode": "whole-run", "machine": machine(backend, torch_threads), "device": backend.name,
        "config_path": str(config or "default"), "config": cfg.as_dict(),
        "train_samples": min(cfg.limit or len(train_split.labels), len(train_split.labels)),
        "test_samples": len(test_split.labels),
        "repeats": repeats, "included": WHOLE_RUN_INCLUDES, "skipped": skipped, "results": [],
    }
    for n in names:
        sec = statistics.median(times[n])
        report["results"].append({
            "contender": n, "wall_seconds": sec, "run_seconds": times[n],
            "epoch_seconds": statistics.median(r["epoch_seconds"] for r in results[n]),
            "test_accuracy": results[n][-1]["test_accuracy"],
            "test_accuracies": [r["test_accuracy"] for r in results[n]],
            "ratio_to_pytorch": sec / ref if ref else None,
        })
    print_whole(report, console)
    write_json_report(report, json_out)
    return report


def print_whole(report: dict[str, Any], console: Console) -> None:
    print_machine(report["machine"], console)
    c = report["config"]
    recipe = (f"{'-'.join(map(str, [784, *c['hidden'], NUM_CLASSES]))}, {c['epochs']} epochs at batch "
              f"{c['batch_size']}, {c['optimizer']} lr {c['lr']:g} ({c['schedule']}), {c['dtype']}")
    t = Table(title=f"whole training run on {report['device']}: {report['config_path']} ({recipe}), "
                    f"{report['train_samples']} train / {report['test_samples']} test samples, "
                    f"median of {report['repeats']} runs")
    for col in ("contender", "wall s", "of which epochs s", "test accuracy", "vs pytorch"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for row in report["results"]:
        t.add_row(row["contender"], f"{row['wall_seconds']:.2f}", f"{row['epoch_seconds']:.2f}",
                  f"{100 * row['test_accuracy']:.2f}%",
                  "-" if row["ratio_to_pytorch"] is None else f"{row['ratio_to_pytorch']:.2f}x")
    console.print(t)
    console.print(f"included: {report['included']}")
    for line in report["skipped"]:
        console.print(line)
