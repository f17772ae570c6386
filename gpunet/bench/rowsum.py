"""Row sums of an (m, k) array two ways: a product with a ones vector (BLAS gemv) and `sum(axis=1, out=)`.

    python -m gpunet.bench.rowsum [--repeats 2000]

The loss takes its (m, 10) row sums by whichever is faster here (see `gpunet.core.activations`); softmax uses
the reduction. Prints microseconds per call, the median of `repeats`, for each row count and dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from gpunet.core.backend import get_backend


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpunet.bench.rowsum", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args(argv)
    print(f"{'dtype':<8} {'m':>6} {'ones product us':>16} {'sum(axis=1) us':>15}")
    for dtype in ("float32", "float64"):
        backend = get_backend("cpu", dtype)
        for m in (128, 200, 4096):
            M = backend.asarray(np.random.default_rng(0).random((m, 10)))
            ones, out = backend.xp.ones((10, 1), backend.dtype), backend.xp.empty((m, 1), backend.dtype)
            ways = {"gemm": lambda: backend.gemm(M, ones, out=out),
                    "sum": lambda: M.sum(axis=1, keepdims=True, out=out)}
            times: dict[str, list[float]] = {k: [] for k in ways}
            for _ in range(args.repeats):
                for k, fn in ways.items():  # in turns, so a change in load falls on both
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
            gemm, red = (statistics.median(times[k]) * 1e6 for k in ways)
            print(f"{dtype:<8} {m:>6} {gemm:>16.2f} {red:>15.2f}")


if __name__ == "__main__":
    main()
