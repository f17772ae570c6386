"""BLAS threads for the training steps: how many, chosen for the work and the machine, and only inside a scope.

NumPy's products run on its BLAS library (OpenBLAS in NumPy's wheels) with a pool of threads, one per core by
default. On a quiet machine more threads take a big product sooner; on a machine where another process keeps
a core busy, OpenBLAS's threads spin waiting for the one that lost its core, and a step can take several times
as long as on one thread. `blas_threads` decides:
- a count asked for (`--threads N`, `n_threads=N`) is used for every step;
- `auto`: one thread when a step's products are small (under SMALL_FLOPS: threads gain nothing there) or the
  pool has one; else the faster count as measured on the run's own steps (`Measured`). The steps run in blocks
  (BLOCK_SECONDS of steps, at least one step) at the chosen count, the middle one at first; now and then one
  block runs at another count (after an untimed one at it if that is more threads), a trial, and its time per
  step is compared with the chosen block's just before it, so a machine whose speed drifts compares like with
  like. Each count's estimate (its time per step over the chosen's) follows its trials; the choice is the
  fewest threads within MARGIN of the fastest. A count's next trial comes when its last one cost BUDGET of the
  steps run since (a count estimated 3x slower: a 0.05 s block every 3.3 s of steps; one about as fast: every
  third block), and at once for fewer threads, measured afresh, when the chosen count's blocks become TRIP slower (a
  load arrived). So trials cost about BUDGET of a run, a load that arrives is met within a few blocks and one
  that leaves within 2 x BLOCK_SECONDS / BUDGET (10) seconds of steps.
The counts hold only inside `BlasThreads` (a context around training and its evaluations): on leaving it every
pool has its threads back. Inside it NumPy's BLAS pool runs the chosen count and any other BLAS library loaded
in the process (SciPy's wheel brings a second OpenBLAS) one thread, so only one pool ever spins.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from threadpoolctl import ThreadpoolController

from gpunet.core.backend import Backend
from gpunet.core.model import gemm_flops
from gpunet.errors import GpunetError, printable

MAX_THREADS = 1024  # the most BLAS threads one may ask for
SMALL_FLOPS = 1e7  # a step's products under this (about a millisecond on one core) run on one thread
BLOCK_SECONDS = 0.05  # a block of steps at one count lasts at least this long (and one step)
BUDGET = 0.01  # the time trials may lose against the chosen count, as a fraction of the steps' time
MARGIN = 0.03  # more threads must be faster by more than this fraction to be chosen
WEIGHT = 0.25  # a trial's weight in its count's estimate (a geometric moving average: the noise of one block)
TRIP = 0.5  # two chosen blocks this much slower per step than the chosen's recent ones: fewer threads tried now
PAUSE = 0.05  # seconds between two steps (an evaluation, other work) after which the first steps are cold
COLD = 0.01  # seconds of steps, each shorter than this, left untimed after a pause and at a trial's start

Clock = Callable[[], float]


def parse_threads(value: int | str) -> int | str:
    """'auto' or a count from 1 to MAX_THREADS (an integer, NumPy's too, or its ASCII digits); GpunetError for
    anything else."""
    if isinstance(value, str) and value == "auto":
        return "auto"
    n: int | None = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        n = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        n = int(value)
    if n is not None and 1 <= n <= MAX_THREADS:
        return n
    if isinstance(value, str):
        shown = repr(printable(value))
    elif n is not None and n.bit_length() > 64:
        shown = f"(an integer of {n.bit_length():,} bits)"
    else:
        shown = printable(repr(value))
    raise GpunetError(f"--threads {shown}: give a number of threads (1 to {MAX_THREADS:,}) or auto")


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

    settled = True  # whether the count is chosen (Measured: once every count is measured)

    def threads(self) -> int | None:
        return self.n

    def record(self, seconds: float) -> bool:
        """Nothing to learn from a step's time (and no report changes)."""
        return False

    def pause(self) -> None:
        """Nothing to forget."""

    def report(self) -> dict[str, Any]:
        return {}


class Measured:
    """`auto` by measuring: `threads()` is the count for the next step, `record(seconds)` that step's time.

    Steps run in blocks of at least `block_seconds` (and one step). The first block (allocating the step's
    arrays) runs untimed at the middle count (the fewer of two: on a loaded machine the most threads can be
    ten times slower per step, on a quiet one the fewest seldom twice), chosen first. Blocks run at the
    chosen count and, when another count's trial is due, one block at that count, a trial: its ratio r is its
    time per step over the chosen block's just before it. A trial at more threads than the chosen count runs
    an untimed block at them first: threads of the pool that sat idle for a while run slower for their first
    tens of milliseconds (on a virtual machine most of all), which would hold against them what a run at that
    count never pays.
    The chosen block after a trial is not measured (OpenBLAS's threads wait for work a while before they
    sleep: after a trial at more threads they may still spin, and on a loaded machine take time from the main
    thread). `estimates[n]` (the chosen's is 1) becomes
    r at the first trial and when r is over `trip` away from it (the machine changed), else moves `weight` of
    the way to r (in logs). After each trial the choice is the fewest threads whose estimate is within
    `margin` of the least. A count's next trial is due when what a block at it loses against the chosen count,
    seconds x (1 - 1 / estimate), is `budget` of the steps' time since. Two chosen blocks in a row `trip`
    slower per step than the chosen's recent ones (a load arrived) drop the estimates of the counts below the
    chosen and make their trials due now. After a `pause`, and at the start of a trial, the steps are untimed
    until `cold` seconds of them have run, unless a step takes that long itself (a cold start or a change of
    threads costs a millisecond or two: a block of short steps would carry it, a full-batch step hardly feels
    it)."""

    def __init__(self, counts: Sequence[int], block_seconds: float = BLOCK_SECONDS, budget: float = BUDGET,
                 margin: float = MARGIN, weight: float = WEIGHT, trip: float = TRIP, cold: float = COLD):
        self.counts = tuple(sorted(set(counts)))
        self.block_seconds, self.budget, self.margin, self.weight = block_seconds, budget, margin, weight
        self.trip, self.cold = trip, cold
        self.chosen = self.count = self.counts[(len(self.counts) - 1) // 2]  # count: the block under way's
        self.estimates: dict[int, float | None] = {n: 1.0 if n == self.chosen else None for n in self.counts}
        self.due = dict.fromkeys(self.counts, 0.0)  # seconds of steps each count's next trial waits for
        self.ran = 0.0  # seconds of steps in blocks so far
        self.steps = self.trials = self.switches = 0
        self.first: dict[str, Any] | None = None  # the first choice with every count measured
        self.block = [0.0, 0]  # the block under way: seconds, steps
        self.warming = True
        self.chill = 0.0  # seconds of short steps still to leave untimed (after a pause, at a trial's start)
        self.before: float | None = None  # the last chosen block's seconds per step
        self.recent: float | None = None  # the chosen's recent blocks' seconds per step (for the trip)
        self.slow = 0  # chosen blocks in a row over the trip
        self.settling = False  # whether the block under way follows a trial
        self.last = 0.0  # the last step's seconds

    @property
    def settled(self) -> bool:
        return self.first is not None

    def threads(self) -> int:
        return self.count

    def record(self, seconds: float) -> bool:
        """Count a step's time; True when it ended a block (the report may have changed)."""
        self.steps += 1
        self.last = seconds
        if self.chill > 0 and seconds < self.cold:
            self.chill -= seconds
            return False
        self.chill = 0.0
        self.block[0] += seconds
        self.block[1] += 1
        if self.block[0] < self.block_seconds:
            return False
        (length, k), n = self.block, self.count
        per_step, self.block = length / k, [0.0, 0]
        self.ran += length
        if self.warming:
            self.warming = False
            return True
        if n != self.chosen:  # a trial block (one starts only after a chosen block, `before`)
            self.judge(n, per_step, length * (2 if n > self.chosen else 1))
            self.count, self.before, self.settling = self.chosen, None, True
            return True
        if self.settling:  # the block after a trial, not measured: the trial's threads may still be spinning
            self.settling = False
            return True
        over = self.recent is not None and per_step > (1 + self.trip) * self.recent
        self.slow = self.slow + 1 if over else 0
        if self.slow == 2:  # a load arrived: measure the fewer threads afresh (more gain nothing from a load)
            for fewer in self.counts[:self.counts.index(n)]:
                self.estimates[fewer], self.due[fewer] = None, self.ran
            self.recent, self.slow = per_step, 0
        elif not over:
            self.recent = per_step if self.recent is None else (self.recent + per_step) / 2
        self.before = per_step
        due = [c for c in self.counts if c != self.chosen and self.due[c] <= self.ran]
        if due:  # a trial next: its first short steps are untimed too (the pool's threads waking or parting)
            self.count, self.chill = min(due, key=self.due.__getitem__), self.cold
            self.warming = self.count > self.chosen
        return True

    def pause(self) -> None:
        """The steps stopped for a while (an evaluation, another program's turn): caches and threads went cold,
        so leave the next short steps untimed. Short steps each after a pause would never finish a block: a
        trial under way then is dropped (it is tried again when due); steps as long as `cold` go on with it."""
        self.chill = self.cold
        if self.count != self.chosen and self.last < self.cold:
            self.count, self.block, self.warming = self.chosen, [0.0, 0], False

    def judge(self, n: int, per_step: float, length: float) -> None:
        """Take count n's trial (`per_step` seconds per step; `length` seconds in all, its untimed block with
        it) against the chosen block before it, then choose."""
        assert self.before is not None
        self.trials += 1
        r = per_step / self.before
        old = self.estimates[n]
        if old is None or abs(math.log(r / old)) > math.log(1 + self.trip):
            self.estimates[n] = r
        else:
            self.estimates[n] = old * (r / old) ** self.weight
        known = {k: e for k, e in self.estimates.items() if e is not None}
        pick = min(k for k, e in known.items() if e <= min(known.values()) * (1 + self.margin))
        if self.first is None and len(known) == len(self.counts):
            self.first = {"step": self.steps, "threads": pick,
                          "estimates": {str(k): e for k, e in self.relative(pick).items()}}
        if pick == self.chosen:
            self.schedule([n], length)
            return
        self.estimates = self.relative(pick)
        self.chosen, self.recent = pick, None  # the chosen blocks so far ran at another count
        self.switches += 1
        self.schedule([k for k in self.counts if k != pick], length)

    def schedule(self, counts: Sequence[int], length: float) -> None:
        """Each count's next trial: when a block of `length` seconds at it loses `budget` of the steps' time
        from now (now for a count not measured yet)."""
        for k in counts:
            e = self.estimates[k]
            self.due[k] = self.ran + (0.0 if e is None else length * max(0.0, 1 - 1 / e) / self.budget)

    def relative(self, n: int) -> dict[int, float | None]:
        """The estimates relative to count n's."""
        base = self.estimates[n]
        assert base is not None
        return {k: None if e is None else e / base for k, e in self.estimates.items()}

    def report(self) -> dict[str, Any]:
        return {"candidates": list(self.counts), "trials": self.trials, "switches": self.switches,
                "first": self.first, "estimates": {str(k): e for k, e in self.estimates.items()}}


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
    and for `auto` by measurement the candidates, trials, switches and estimates."""

    def __init__(self, chooser: Fixed | Measured, asked: int | str, policy: str,
                 blas: ThreadpoolController | None = None, clock: Clock = time.perf_counter):
        self.chooser, self.clock, self.blas = chooser, clock, blas
        self.ours, self.others = numpy_pools(blas) if blas is not None else ([], [])
        self.limiter: Any = None
        self.current: int | None = None
        self.ended: float | None = None  # when the last step ended
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
        """One training step: run at the chooser's count, and its time told to the chooser (and a gap over
        PAUSE since the last step)."""
        n = self.chooser.threads()
        if n is None:
            yield
            return
        t0 = self.clock()
        if self.ended is not None and t0 - self.ended > PAUSE:
            self.chooser.pause()
            n = self.chooser.threads()
        self.apply(n)
        yield
        self.ended = self.clock()
        if self.chooser.record(self.ended - t0):
            self.report.update(self.chooser.report())
        at = self.report["steps_at"]  # {"1": steps, "2": steps}, in the counts' order
        key = str(n)
        if key not in at:
            at[key] = 0
            self.report["steps_at"] = at = dict(sorted(at.items(), key=lambda kv: int(kv[0])))
        at[key] += 1
        if n != self.report["threads"] and at[key] > at.get(str(self.report["threads"]), 0):
            self.report["threads"] = n  # the count most steps ran at


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
