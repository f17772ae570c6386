"""The load and the threads `gpunet bench` times contenders under: `--busy K` busy-loop processes, and each
contender at its own thread defaults and at each fixed count of threads."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

from gpunet.core.backend import Backend
from gpunet.core.threads import blas_threads, candidates, cores, pool_threads
from gpunet.errors import GpunetError

# A Python loop spinning on one core, as `python3 -c "while True: pass"`, that also ends by itself within a few
# hundredths of a second when the bench that started it is gone (its parent changes), however the bench ended.
HOG = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(1_000_000):\n        pass\n"
SETTLE_SECONDS = 0.2  # after starting the loops, before timing: each has started spinning
PER_CORE = 4  # --busy takes at most this many loops per core (more only queue behind each other)


def parse_busy(k: int) -> int:
    """A count of busy loops from 0 to PER_CORE per core; GpunetError otherwise (a huge one would start a process
    for each)."""
    most = PER_CORE * cores()
    if not 0 <= k <= most:
        raise GpunetError(f"--busy {k}: give 0 to {most:,} busy processes ({PER_CORE} per core on this machine)")
    return k


class Busy:
    """Context: `k` busy-loop processes while `load("busy")`, none while `load("quiet")`; every one is killed
    on leaving it, on an error or Ctrl-C too."""

    def __init__(self, k: int):
        self.k = parse_busy(k)
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> "Busy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.load("quiet")

    def load(self, load: str) -> None:
        if load == "busy" and not self.procs and self.k:
            self.procs = [subprocess.Popen([sys.executable, "-c", HOG], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                          for _ in range(self.k)]
            time.sleep(SETTLE_SECONDS)
        elif load == "quiet" and self.procs:
            for p in self.procs:
                p.kill()
            for p in self.procs:
                p.wait()
            self.procs = []

    def before(self, key: tuple[Any, ...]) -> None:
        """`take_turns`' hook for tasks keyed (contender, setting, load)."""
        self.load(key[-1])


def loads(busy: int) -> list[str]:
    return ["quiet", "busy"] if busy else ["quiet"]


def by_load(keys: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Task keys (..., load) quiet ones first: taking turns in this order, the loops start and stop at most
    twice a round."""
    return sorted(keys, key=lambda key: key[-1] != "quiet")


def settings(backend: Backend, best: bool) -> list[int | None]:
    """The thread settings to time each contender at: None (its defaults), then with `best`, on the CPU, each
    count `auto` chooses among (1 and the cores)."""
    n = pool_threads() if best and backend.name == "cpu" else None
    return [None, *candidates(n)] if n else [None]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads at n (None: as they are), restored after."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def at_threads(name: str, n: int | None, backend: Backend, task: Callable[[int], Any]) -> Callable[[int], Any]:
    """Contender `name`'s timed call `task` run on n threads (None: its defaults). gpunet's runner sets its own."""
    if n is None or name == "gpunet":
        return task
    if name.startswith("pytorch"):
        def run(i: int) -> Any:
            with torch_threads(n):
                return task(i)
        return run

    def run_blas(i: int) -> Any:
        with blas_threads(n, backend, 1, (1, 1)):  # a fixed count: the products' size plays no part
            return task(i)
    return run_blas


def default_threads(name: str) -> str:
    """What a contender's defaults are, in words: NumPy's pool's count, or PyTorch's."""
    if name.startswith("pytorch"):
        import torch

        return f"default ({torch.get_num_threads()})"
    return f"default ({pool_threads() or '?'})"
