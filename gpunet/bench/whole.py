"""`gpunet bench --whole-run`: complete training runs of a config's recipe, gpunet against PyTorch."""

from __future__ import annotations

import io
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from gpunet.core.backend import Backend, get_backend
from gpunet.bench.report import check_json_out, machine, print_whole, usable_contenders, wide, write_json_report
from gpunet.bench.busy import Busy, at_threads, by_load, default_threads, loads, parse_busy, settings
from gpunet.bench.run import compare, parse_contenders
from gpunet.bench.timing import take_turns
from gpunet.core.threads import parse_threads, threads_label
from gpunet.runs.config import Config, load_config
from gpunet.data.datasets import Split
from gpunet.errors import GpunetError

WHOLE_RUN_CONTENDERS = ("gpunet", "pytorch")
WHOLE_RUN_INCLUDES = ("each timed run starts from the decoded MNIST arrays on the host (read once, shared, "
                      "not timed) and includes copying them to the device as features, the initial weights, every "
                      "epoch's steps with one read per epoch, and one test-set evaluation after the last epoch (no "
                      "validation split: both train on the same rows); gpunet's also includes writing "
                      "its run directory (model.npz at each logged epoch, metrics.json, checkpoint.npz), as "
                      "`gpunet train` does")


def gpunet_run(cfg: Config, backend: Backend, train_split: Split, test_split: Split,
               threads: int | str = "auto") -> dict[str, Any]:
    """One complete `gpunet.runs.train.train` run of `cfg` into a temporary run directory, its console output
    drawn into a string, as `gpunet train` draws it."""
    from gpunet.runs.report import ConsoleReporter
    from gpunet.runs.train import train

    with tempfile.TemporaryDirectory(prefix="gpunet-bench-") as tmp:
        metrics = train(cfg, backend, train_split, test_split, Path(tmp) / "run",
                        ConsoleReporter(Console(file=io.StringIO())), threads=threads)
    return {"test_accuracy": metrics["test_accuracy"], "epoch_seconds": metrics["train_seconds"],
            "threads": threads_label(metrics["threads"])}


def run_whole(device: str = "cpu", config: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
              contenders: str = ",".join(WHOLE_RUN_CONTENDERS), repeats: int = 3, json_out: Path | None = None,
              console: Console | None = None, threads: int | str = "auto", busy: int = 0,
              best: bool = True) -> dict[str, Any]:
    """Time complete training runs of the recipe in `config` (a config name or path, default 'default'; `epochs` and
    `limit` override it) for gpunet and PyTorch: one warm-up run each, then `repeats` runs each, taking turns;
    each at its thread defaults (gpunet: `threads`) and, with `best`, at each fixed count; with `busy` K, each
    also with K busy-loop processes running. Prints the table, optionally writes JSON; returns the report."""
    from gpunet.data.load import load_mnist

    check_json_out(json_out)
    console = wide(console)
    if repeats < 1:
        raise GpunetError("--repeats must be at least 1")
    # No validation split: both contenders train on the same rows (PyTorch's loop holds none out).
    cfg = load_config(config, {"epochs": epochs, "limit": limit, "val_size": 0})
    threads, busy = parse_threads(threads), parse_busy(busy)
    backend = get_backend(device, cfg.dtype)
    asked = [n for n in parse_contenders(contenders) if n in WHOLE_RUN_CONTENDERS]  # numpy has no whole run
    names, skipped, torch_threads = usable_contenders(asked, backend)
    if not names:
        raise GpunetError(f"--contenders {contenders!r}: --whole-run times {' and '.join(WHOLE_RUN_CONTENDERS)}")
    train_split, test_split = load_mnist()
    runs: dict[str, Callable[..., dict[str, Any]]] = {"gpunet": gpunet_run}
    if "pytorch" in names:
        from gpunet.bench.torch import torch_run

        runs["pytorch"] = torch_run
    counts = settings(backend, best)
    console.print(f"whole run of {config or 'default'}: timing {', '.join(names)} at {len(counts)} thread "
                  f"setting(s)" + (f", quiet and with {busy} busy process(es)" if busy else "")
                  + f" ({repeats} runs each after a warm-up run)")

    def task(n: str, c: int | None) -> Callable[[int], dict[str, Any]]:
        if n == "gpunet":
            return lambda i: gpunet_run(cfg, backend, train_split, test_split, threads if c is None else c)
        return at_threads(n, c, backend, lambda i: {**runs[n](cfg, backend, train_split, test_split),
                                                     "threads": str(c) if c else default_threads(n)})

    keys = [(n, c, load) for n in names for c in counts for load in loads(busy)]
    with Busy(busy) as hogs:
        times, results = take_turns({key: task(*key[:2]) for key in by_load(keys)}, repeats, warmup=1,
                                    before=hogs.before)
    report: dict[str, Any] = {
        "mode": "whole-run", "machine": machine(backend, torch_threads), "device": backend.name,
        "config_path": str(config or "default"), "config": cfg.as_dict(),
        "train_samples": min(cfg.limit or len(train_split.labels), len(train_split.labels)),
        "test_samples": len(test_split.labels), "busy": busy, "threads": threads,
        "repeats": repeats, "included": WHOLE_RUN_INCLUDES, "skipped": skipped, "results": [],
    }
    for n, c, load in keys:
        t = times[n, c, load]
        report["results"].append({
            "contender": n, "setting": c, "load": load, "threads": results[n, c, load][-1]["threads"],
            "wall_seconds": statistics.median(t), "run_seconds": t,
            "epoch_seconds": statistics.median(r["epoch_seconds"] for r in results[n, c, load]),
            "test_accuracy": results[n, c, load][-1]["test_accuracy"],
            "test_accuracies": [r["test_accuracy"] for r in results[n, c, load]],
        })
    compare(report["results"], "wall_seconds")
    print_whole(report, console)
    write_json_report(report, json_out)
    return report
