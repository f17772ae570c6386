"""BLAS threads for the training steps: how many, chosen for the work and the machine, and only inside a scope.

NumPy's products run on its BLAS library (OpenBLAS in NumPy's wheels) with a pool of threads, one per core by
default. On a quiet machine more threads take a big product sooner; on a machine where another process keeps
a core busy, OpenBLAS's threads spin waiting for the one that lost its core, and a step can take several times
as long as on one thread. `blas_threads` decides:
- a count asked for (`--threads N`, `n_threads=N`) is used for every step;
- `auto`: one thread when a step's products are small (under SMALL_FLOPS: threads gain nothing there) or the
  pool has one; else the faster count as measured on the run's own steps (`Measured`): blocks of steps at each
  candidate count in turn (N, 1, 1, N; a count already over CLEAR times slower gets no more), the fewer threads
  unless more are faster by over MARGIN; the choice then runs until the next probe, after FACTOR times the
  probe's time at first, an interval that doubles while the choice stands (up to MAX_INTERVAL seconds of steps)
  and starts again when it changes, or at once when the chosen count's steps become over TRIP slower than the
  probe measured (a load arrived). So probing costs a few
  percent of a run at most, a machine that becomes busy is noticed within a fraction of a second, and one that
  becomes quiet again within MAX_INTERVAL.
The counts hold only inside `BlasThreads` (a context around training and its evaluations): on leaving it every
pool has its threads back. Inside it NumPy's BLAS pool runs the chosen count and any other BLAS library loaded
in the process (SciPy's wheel brings a second OpenBLAS) one thread, so only one pool ever spins.
"""

from __future__ import annotations

import numbers
import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

from gpunet.core.backend import Backend
from gpunet.core.model import gemm_flops
from gpunet.errors import GpunetError

SMALL_FLOPS = 1e7  # a step's products under this (about a millisecond on one core) run on one thread
BLOCK_SECONDS = 0.05  # a probe's block of steps at one count lasts at least this long (and one step)
ROUNDS = 2  # blocks per candidate in a probe, in the order A B .. B A, so a drifting load cancels out
CLEAR = 2.0  # a count this many times slower per step than the best so far gets no more blocks in the probe
MARGIN = 0.03  # more threads must be faster by more than this fraction to be chosen
FACTOR = 20  # the first interval between probes: this many times the probe's own time (probing <= 5%)
MAX_INTERVAL = 30.0  # seconds of steps between probes at most, so a change of load is noticed within it
TRIP = 0.5  # the chosen count's steps this much slower than measured (over TRIP_BLOCKS blocks): probe again
TRIP_BLOCKS = 4

Clock = Callable[[], float]


def parse_threads(value: int | str) -> int | str:
    """'auto' or a count of 1 or more (an integer, NumPy's too, or its digits); GpunetError for anything else."""
    if isinstance(value, str) and value == "auto":
        return "auto"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise GpunetError(f"--threads {value!r}: give a number of threads (1 or more) or auto")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def candidates(n: int) -> tuple[int, ...]:
    """The counts `auto` measures when the pool has n threads: 1, n // 2 and n (1 and 2 on two cores)."""
    return tuple(sorted({1, max(1, n // 2), n}))


def pool_threads(blas: ThreadpoolController | None = None) -> int | None:
    """The threads NumPy's BLAS pool has now, at most the cores (None where threadpoolctl finds no BLAS)."""
    ours, _ = numpy_pools(blas or ThreadpoolController().select(user_api="blas"))
    return min(min(lib.num_threads for lib in ours), cores()) if ours else None


def worker_threads(threads: int | str, workers: int) -> int | str:
    """Each of `workers` processes' threads: a count asked for as it is; `auto` for one worker; else each worker
    gets its share of the cores (at least one), so the workers never ask for more threads than there are cores."""
    return threads if threads != "auto" or workers == 1 else max(1, cores() // workers)


class Fixed:
    """The same count for every step (None: the pools are left as they are)."""

    def __init__(self, n: int | None):
        self.n = n

    settled = True  # whether the count is chosen (Measured: after its first probe)

    def threads(self) -> int | None:
        return self.n

    def record(self, seconds: float) -> None:
        """Nothing to learn from a step's time."""

    def report(self) -> dict[str, Any]:
        return {}


class Measured:
    """`auto` by measuring: `threads()` is the count for the next step, `record(seconds)` that step's time.

    The first `warmup` steps (allocating the step's arrays) run at the largest count, untimed. A probe runs
    `rounds` blocks of steps at each candidate (each block at least `block_seconds` of steps), in the order
    chosen, others, others reversed, chosen (the largest count first; a count over `clear` times slower per step
    than the best so far gets no more blocks), then picks the count with the least time per step, the fewest
    threads among those within `margin` of it. The pick runs for `interval` seconds of steps (only the steps' own
    time counts), then the next probe starts; or sooner, when the pick's steps over `trip_blocks` blocks' time
    take over `trip` more than the probe measured."""

    def __init__(self, counts: Sequence[int], block_seconds: float = BLOCK_SECONDS, rounds: int = ROUNDS,
                 margin: float = MARGIN, factor: float = FACTOR, max_interval: float = MAX_INTERVAL,
                 trip: float = TRIP, trip_blocks: int = TRIP_BLOCKS, clear: float = CLEAR, warmup: int = 1):
        self.counts = tuple(sorted(set(counts)))
        self.block_seconds, self.rounds, self.margin = block_seconds, rounds, margin
        self.factor, self.max_interval, self.warmup = factor, max_interval, warmup
        self.trip, self.trip_seconds, self.clear = trip, trip_blocks * block_seconds, clear
        self.chosen = self.counts[-1]
        self.interval = 0.0  # seconds of steps between the last probe and the next
        self.ran = 0.0  # seconds of steps since the last probe
        self.steps = 0
        self.probes: list[dict[str, Any]] = []  # each probe: its step, why, seconds per step of each count, the pick
        self.start_probe("first")

    def start_probe(self, why: str) -> None:
        self.why = why
        order = [self.chosen] + [n for n in self.counts if n != self.chosen]
        self.queue = [n for r in range(self.rounds) for n in (order if r % 2 == 0 else order[::-1])]
        self.block = 0.0  # seconds of the block under way
        self.totals = {n: [0.0, 0] for n in self.counts}  # count -> [seconds, steps] in this probe
        self.window = [0.0, 0]  # [seconds, steps] of the pick's steps since the last look at them

    @property
    def settled(self) -> bool:
        return bool(self.probes)

    def threads(self) -> int:
        return self.queue[0] if self.queue and not self.warmup else self.chosen

    def record(self, seconds: float) -> None:
        self.steps += 1
        if self.warmup:
            self.warmup -= 1
        elif not self.queue:
            self.ran += seconds
            self.window[0] += seconds
            self.window[1] += 1
            if self.window[0] >= self.trip_seconds:
                slower = self.window[0] / self.window[1] > (1 + self.trip) * self.measured
                self.window = [0.0, 0]
                if slower:
                    self.start_probe("slower")
                    return
            if self.ran >= self.interval:
                self.start_probe("interval")
        else:
            total = self.totals[self.queue[0]]
            total[0] += seconds
            total[1] += 1
            self.block += seconds
            if self.block >= self.block_seconds:
                self.queue.pop(0)
                self.block = 0.0
                per_step = {n: s / k for n, (s, k) in self.totals.items() if k}
                slow = {n for n, t in per_step.items() if t > self.clear * min(per_step.values())}
                self.queue = [n for n in self.queue if n not in slow]
                if not self.queue:
                    self.decide()

    def decide(self) -> None:
        per_step = {n: s / k for n, (s, k) in self.totals.items() if k}
        best = min(per_step.values())
        pick = min(n for n, t in per_step.items() if t <= best * (1 + self.margin))
        probe = sum(s for s, _ in self.totals.values())
        stands = bool(self.probes) and pick == self.chosen
        self.interval = max(self.factor * probe, min(2 * self.interval, self.max_interval) if stands else 0.0)
        self.chosen, self.ran, self.measured = pick, 0.0, per_step[pick]
        self.probes.append({"step": self.steps, "why": self.why,
                            "seconds_per_step": {str(n): t for n, t in per_step.items()}, "threads": pick})

    def report(self) -> dict[str, Any]:
        return {"candidates": list(self.counts), "probes": self.probes}


def numpy_pools(blas: ThreadpoolController) -> tuple[list[Any], list[Any]]:
    """(NumPy's BLAS libraries, the others) among the loaded ones; all count as NumPy's when none lies in its
    folders (a NumPy linked to a system BLAS)."""
    here = Path(np.__file__).resolve().parent
    roots = (str(here), str(here.parent / "numpy.libs"))
    ours = [lib for lib in blas.lib_controllers if str(Path(lib.filepath).resolve()).startswith(roots)]
    return (ours, [lib for lib in blas.lib_controllers if lib not in ours]) if ours else (blas.lib_controllers, [])


class BlasThreads:
    """Context: the BLAS threads of the steps run inside it, each step wrapped in `step()`. `report` is a live
    dict for metrics.json: what was asked, the policy, the count most steps ran at, the steps at each count,
    and for `auto` by measurement the candidates and each probe's times."""

    def __init__(self, chooser: Fixed | Measured, asked: int | str, policy: str,
                 blas: ThreadpoolController | None = None, clock: Clock = time.perf_counter):
        self.chooser, self.clock, self.blas = chooser, clock, blas
        self.ours, self.others = numpy_pools(blas) if blas is not None else ([], [])
        self.steps_at: Counter[int] = Counter()
        self.limiter: Any = None
        self.current: int | None = None
        self.report: dict[str, Any] = {"asked": asked, "policy": policy, "threads": chooser.threads(),
                                       "blas": [f"{lib.internal_api} {lib.version}" for lib in self.ours],
                                       "steps_at": {}, **chooser.report()}

    def __enter__(self) -> "BlasThreads":
        if self.blas is not None and self.chooser.threads() is not None:
            self.limiter = self.blas.limit(limits=None)  # restores every pool's threads on leaving
            self.limiter.__enter__()
            for lib in self.others:
                lib.set_num_threads(1)
            self.apply(self.chooser.threads())  # for what runs inside but outside a step (evaluations)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.limiter is not None:
            self.limiter.__exit__(*exc)
        self.limiter, self.current = None, None

    def apply(self, n: int) -> None:
        if n != self.current and self.limiter is not None:
            for lib in self.ours:
                lib.set_num_threads(n)
            self.current = n

    @contextmanager
    def step(self) -> Iterator[None]:
        """One training step: run at the chooser's count, and its time told to the chooser."""
        n = self.chooser.threads()
        if n is None:
            yield
            return
        self.apply(n)
        t0 = self.clock()
        yield
        self.chooser.record(self.clock() - t0)
        self.steps_at[n] += 1
        self.report["steps_at"] = {str(k): v for k, v in sorted(self.steps_at.items())}
        self.report["threads"] = self.steps_at.most_common(1)[0][0]


def threads_label(report: dict[str, Any]) -> str:
    """A `BlasThreads.report` in a few words: '2', 'auto: 1', 'auto: 2 (3% at 1)', 'as set'."""
    if report["threads"] is None:
        return "as set"
    text = str(report["threads"]) if report["asked"] != "auto" else f"auto: {report['threads']}"
    steps = {int(n): k for n, k in report["steps_at"].items()}
    rest = ", ".join(f"{max(1, round(100 * k / sum(steps.values())))}% at {n}" for n, k in sorted(steps.items())
                     if n != report["threads"])
    return text + (f" ({rest})" if rest else "")


def blas_threads(asked: int | str, backend: Backend, rows: int, sizes: Sequence[int],
                 clock: Clock = time.perf_counter) -> BlasThreads:
    """The BLAS threads for training steps of `rows` rows through a net of layer `sizes` on `backend`, as asked
    ('auto' or a count; GpunetError otherwise). On a GPU the pools are left alone: the step's products run there."""
    asked = parse_threads(asked)
    if backend.name != "cpu":
        return BlasThreads(Fixed(None), asked, f"left as set: the step runs on {backend.name}")
    blas = ThreadpoolController().select(user_api="blas")
    n = pool_threads(blas)
    if n is None:
        return BlasThreads(Fixed(None), asked, "left as set: threadpoolctl finds no BLAS library")
    if asked != "auto":
        return BlasThreads(Fixed(asked), asked, "asked", blas, clock)
    if n == 1:
        return BlasThreads(Fixed(1), asked, "one thread available", blas, clock)
    if gemm_flops(rows, sizes) < SMALL_FLOPS:
        return BlasThreads(Fixed(1), asked, "small products", blas, clock)
    return BlasThreads(Measured(candidates(n)), asked, "measured", blas, clock)
