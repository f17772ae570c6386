"""Timing: contenders taking turns, the GEMM floor, and the peak-memory probe in a fresh process."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np

from gpunet.core.backend import Backend
from gpunet.bench.contenders import gemm_flops
from gpunet.errors import GpunetError


def gemm_floor(backend: Backend, B: int, m: int, sizes: tuple[int, ...],
               min_seconds: float = 0.3) -> tuple[float, float]:
    """(sgemm GFLOP/s, seconds per epoch of the step's products alone), on `backend`: the products of a batch of
    B rows, taken whole and, where the backend takes a batch in row chunks, chunk by chunk; the faster sets the
    floor, so that neither way of taking the batch can flatter the ratio to it."""
    ways = {B, min(B, backend.chunk_rows or B)}
    rate = max(sgemm_rate(backend, B, rows, sizes, min_seconds) for rows in ways)
    return rate / 1e9, gemm_flops(m, sizes) / rate


def sgemm_rate(backend: Backend, B: int, rows: int, sizes: tuple[int, ...], min_seconds: float) -> float:
    """FLOP/s of one training pass's products (forward, dW and dA) over B rows taken `rows` at a time, the
    median of repeated runs. The activations are B distinct rows, so a chunked pass reads its inputs from
    memory as the step does."""
    xp, dt, gemm = backend.xp, backend.dtype, backend.gemm  # the step's own products (cuBLAS on a GPU)
    rng = np.random.default_rng(0)
    A = [backend.asarray(rng.random((B, n), dtype=np.float32)) for n in sizes]  # A0 .. AL, also used as dZ
    W = [backend.asarray(rng.random((a, b), dtype=np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]
    lengths = {min(rows, B - start) for start in range(0, B, rows)}  # a chunk's rows, the last one's too
    Z = {k: [xp.empty((k, Wl.shape[1]), dt) for Wl in W] for k in lengths}
    dA = {k: [xp.empty((k, Wl.shape[0]), dt) for Wl in W] for k in lengths}
    dW = [xp.empty(Wl.shape, dt) for Wl in W]

    def products() -> None:
        for start in range(0, B, rows):
            Ac = [a[start:start + rows] for a in A]
            k = Ac[0].shape[0]
            for i, Wl in enumerate(W):  # layer l = i + 1
                gemm(Ac[i], Wl, out=Z[k][i])  # Z_l = A_{l-1} W_l
                gemm(Ac[i].T, Ac[i + 1], out=dW[i])  # dW_l = A_{l-1}.T dZ_l
                if i > 0:
                    gemm(Ac[i + 1], Wl.T, out=dA[k][i])  # dA_{l-1} = dZ_l W_l.T

    # On a GPU the products are replayed as one CUDA graph and timed by the GPU's own clock, so the floor is the
    # products' time, not Python's or the kernel launches' (at batch 128 those would dominate).
    run = backend.capture(products) if backend.can_capture else products
    products()
    backend.synchronize()
    reps = 10 if backend.can_capture else 1  # calls per timing: a graph of small products takes microseconds
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 1000):
        times.append(seconds_per_call(backend, run, reps))
    return gemm_flops(B, sizes) / statistics.median(times)


def seconds_per_call(backend: Backend, fn: Callable[[], None], reps: int) -> float:
    """Seconds per call of `fn` over `reps` calls: between CUDA events (the GPU's clock) on cuda, else on the
    host's clock with a synchronize at the end."""
    if backend.name == "cuda":
        cuda = backend.xp.cuda
        start, end = cuda.Event(), cuda.Event()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return cuda.get_elapsed_time(start, end) / 1e3 / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    backend.synchronize()
    return (time.perf_counter() - t0) / reps


def take_turns(tasks: dict[Hashable, Callable[[int], Any]], rounds: int, warmup: int,
               before: Callable[[Hashable], None] = lambda name: None) -> tuple[dict[Hashable, list[float]],
                                                                                dict[Hashable, list[Any]]]:
    """Warm up each task (calls rounds+1 .. rounds+warmup), then time calls 1..rounds of each, taking turns
    in a rotating order; `before(name)` runs ahead of each of task name's calls, untimed (`gpunet bench --busy`
    sets the load there). Each call must end with a host read (which synchronises the device).
    Returns the times and the results of the timed calls."""
    names = list(tasks)
    for name, task in tasks.items():
        for i in range(warmup):
            before(name)
            task(rounds + 1 + i)
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, list[Any]] = {n: [] for n in names}
    for i in range(1, rounds + 1):
        k = (i - 1) % len(names)
        for n in names[k:] + names[:k]:
            before(n)
            t0 = time.perf_counter()
            results[n].append(tasks[n](i))
            times[n].append(time.perf_counter() - t0)
    return times, results


def peak_memory(name: str, device: str, batch: int | str, limit: int, graph: bool) -> dict[str, float]:
    """Run `name` in a fresh subprocess (set-up and three epochs) and return its peak memory in MiB:
    "train" while training (with the data loaded: the table's figure) and "process" over the whole process
    (the CPU only: this includes the transient peak of decoding MNIST, the same for every contender)."""
    args = json.dumps({"name": name, "device": device, "batch": batch, "limit": limit, "graph": graph})
    proc = subprocess.run([sys.executable, "-m", "gpunet.bench.memory", args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GpunetError(f"the memory run of {name} at batch {batch} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_peak_mib() -> float:
    """This process's peak RSS (VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")
