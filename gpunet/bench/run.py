"""The epoch mode of `gpunet bench`: the contenders at each batch size, taking turns."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from gpunet.core.backend import get_backend
from gpunet.bench.busy import Busy, at_threads, by_load, default_threads, loads, parse_busy, settings
from gpunet.bench.contenders import Gpunet, Plain, gemm_flops, load_data
from gpunet.bench.report import check_json_out, machine, print_report, usable_contenders, wide, write_json_report
from gpunet.bench.timing import gemm_floor, peak_memory, take_turns
from gpunet.runs.config import batch_rows
from gpunet.errors import GpunetError
from gpunet.core.model import MLP
from gpunet.core.threads import parse_threads, threads_label

CONTENDERS = ("gpunet", "numpy", "pytorch", "pytorch-gather")


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


def runner_class(name: str) -> Any:
    """What makes contender `name`'s runner from (backend, data, B, init, graph); PyTorch's module is imported
    only here."""
    if name.startswith("pytorch"):
        from gpunet.bench.torch import Torch, TorchGather

        return (TorchGather if name == "pytorch-gather" else Torch).on
    return {"gpunet": Gpunet, "numpy": Plain}[name]


def make_runner(name: str, setting: int | None, threads: int | str, backend: Any, data: Any, B: int,
                init: dict[str, Any], graph: bool) -> Any:
    """Contender `name`'s runner; gpunet's on `threads` at its defaults (setting None), else on `setting`."""
    if name == "gpunet":
        return Gpunet(backend, data, B, init, graph, threads if setting is None else setting)
    return runner_class(name)(backend, data, B, init, graph)


def compare(rows: list[dict[str, Any]], seconds: str = "seconds_per_epoch") -> None:
    """Each row's ratios of `seconds` within its batch (if any) and load: `ratio_to_pytorch` against the faster
    PyTorch row at its thread defaults, `ratio_to_best` against its own contender's fastest fixed thread count."""
    for row in rows:
        mates = [r for r in rows if (r.get("batch"), r["load"]) == (row.get("batch"), row["load"])]
        torch_rows = [r[seconds] for r in mates if r["contender"].startswith("pytorch") and r["setting"] is None]
        fixed = [r[seconds] for r in mates if r["contender"] == row["contender"] and r["setting"] is not None]
        row["ratio_to_pytorch"] = row[seconds] / min(torch_rows) if torch_rows else None
        row["ratio_to_best"] = row[seconds] / min(fixed) if fixed else None


def late_to_first(times: list[float]) -> float:
    """The median of the later half of the timed epochs over the first: above 1 when a run slows down."""
    return statistics.median(times[len(times) // 2:]) / times[0]


def run_bench(device: str = "cpu", batch_sizes: str = "128,1024,full", epochs: int = 5, limit: int = 0,
              contenders: str = ",".join(CONTENDERS), memory: bool = True, graph: bool = False,
              json_out: Path | None = None, console: Console | None = None, threads: int | str = "auto",
              busy: int = 0, best: bool = True) -> dict[str, Any]:
    """Time the contenders at each batch size, print the tables, optionally write JSON; return the report.
    Each contender runs at its thread defaults (gpunet: `threads`) and, with `best`, at each fixed count; with
    `busy` K, each also with K busy-loop processes running (gpunet.bench.busy)."""
    console = wide(console)
    if epochs < 1:
        raise GpunetError("--epochs must be at least 1")
    sizes_asked = parse_batch_sizes(batch_sizes)
    check_json_out(json_out)
    threads, busy = parse_threads(threads), parse_busy(busy)
    backend = get_backend(device)
    names, skipped, torch_threads = usable_contenders(parse_contenders(contenders), backend)
    data = load_data(backend, limit)
    net = MLP(backend, seed=0)
    init, sizes = net.state_dict(), net.sizes
    report: dict[str, Any] = {
        "mode": "epoch", "machine": machine(backend, torch_threads), "device": backend.name, "samples": data.m,
        "epochs": epochs, "busy": busy, "threads": threads,
        "sizes": list(sizes), "cuda_graph": graph and backend.can_capture, "skipped": skipped, "results": [],
    }
    counts = settings(backend, best)
    for batch in sizes_asked:
        B = batch_rows(batch, data.m)
        console.print(f"batch {batch}: timing {', '.join(names)} at {len(counts)} thread setting(s)"
                      + (f", quiet and with {busy} busy process(es)" if busy else "")
                      + f" ({epochs} epochs each after a warm-up)")
        # A task (contender, setting, load) for each; one runner per setting, but gpunet's auto gets one per load,
        # so that its choice follows a single load.
        keys = [(n, c, load) for n in names for c in counts for load in loads(busy)]
        runners = {key: make_runner(key[0], key[1], threads, backend, data, B, init, graph) for key in keys
                   if key[2] == "quiet" or key[:2] == ("gpunet", None)}
        runner = {key: runners.get(key) or runners[key[0], key[1], "quiet"] for key in keys}
        with Busy(busy) as hogs:
            times, stats = take_turns({key: at_threads(key[0], key[1], backend, runner[key].epoch)
                                       for key in by_load(keys)},
                                      epochs, warmup=1 if math.ceil(data.m / B) >= 3 else 3, before=hogs.before)
        labels = {key: str(key[1]) if key[1] is not None else threads_label(runner[key].blas.report)
                  if key[0] == "gpunet" else default_threads(key[0]) for key in keys}
        del runners, runner
        sgemm, floor = gemm_floor(backend, B, data.m, sizes)
        mem = {n: peak_memory(n, backend.name, batch, limit, graph) for n in names} if memory else {}
        flops = gemm_flops(data.m, sizes)
        rows = []
        for n, c, load in keys:
            t = times[n, c, load]
            sec = statistics.median(t)
            measured = memory and c is None and load == "quiet"
            rows.append({
                "batch": batch, "contender": n, "setting": c, "load": load,
                "threads": labels[n, c, load],
                "seconds_per_epoch": sec, "epoch_seconds": t, "late_to_first": late_to_first(t),
                "samples_per_second": data.m / sec,
                "gflop_per_epoch": flops / 1e9, "gflops": flops / sec / 1e9, "sgemm_gflops": sgemm,
                "fraction_of_sgemm": flops / sec / 1e9 / sgemm, "gemm_floor_seconds": floor,
                "ratio_to_gemm_floor": sec / floor, "train_loss": stats[n, c, load][-1][0],
                "peak_mib": mem[n]["train"] if measured else None,
                "peak_process_mib": mem[n].get("process") if measured else None,
            })
        compare(rows)
        report["results"] += rows
    print_report(report, console)
    write_json_report(report, json_out)
    return report
