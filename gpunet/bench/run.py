"""The epoch mode of `gpunet bench`: the contenders at each batch size, taking turns."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console

from gpunet.core.backend import get_backend
from gpunet.bench.contenders import Gpunet, Plain, gemm_flops, load_data
from gpunet.bench.report import check_json_out, machine, print_report, usable_contenders, wide, write_json_report
from gpunet.bench.timing import gemm_floor, peak_memory, take_turns
from gpunet.runs.config import batch_rows
from gpunet.errors import GpunetError
from gpunet.core.model import MLP

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


def late_to_first(times: list[float]) -> float:
    """The median of the later half of the timed epochs over the first: above 1 when a run slows down."""
    return statistics.median(times[len(times) // 2:]) / times[0]


def run_bench(device: str = "cpu", batch_sizes: str = "128,1024,full", epochs: int = 5, limit: int = 0,
              contenders: str = ",".join(CONTENDERS), memory: bool = True, graph: bool = False,
              json_out: Path | None = None, console: Console | None = None) -> dict[str, Any]:
    """Time the contenders at each batch size, print the tables, optionally write JSON; return the report."""
    console = wide(console)
    if epochs < 1:
        raise GpunetError("--epochs must be at least 1")
    sizes_asked = parse_batch_sizes(batch_sizes)
    check_json_out(json_out)
    backend = get_backend(device)
    names, skipped, torch_threads = usable_contenders(parse_contenders(contenders), backend)
    data = load_data(backend, limit)
    net = MLP(backend, seed=0)
    init, sizes = net.state_dict(), net.sizes
    report: dict[str, Any] = {
        "mode": "epoch", "machine": machine(backend, torch_threads), "device": backend.name, "samples": data.m,
        "epochs": epochs,
        "sizes": list(sizes), "cuda_graph": graph and backend.can_capture, "skipped": skipped, "results": [],
    }
    for batch in sizes_asked:
        B = batch_rows(batch, data.m)
        console.print(f"batch {batch}: timing {', '.join(names)} ({epochs} epochs each after a warm-up)")
        runners = {n: runner_class(n)(backend, data, B, init, graph) for n in names}
        times, stats = take_turns({n: r.epoch for n, r in runners.items()}, epochs,
                                 warmup=1 if math.ceil(data.m / B) >= 3 else 3)
        del runners
        sgemm, floor = gemm_floor(backend, B, data.m, sizes)
        mem = {n: peak_memory(n, backend.name, batch, limit, graph) for n in names} if memory else {}
        flops = gemm_flops(data.m, sizes)
        torch_times = [statistics.median(t) for n, t in times.items() if n.startswith("pytorch")]
        ref = min(torch_times, default=None)  # the faster PyTorch loop
        for n in names:
            sec = statistics.median(times[n])
            report["results"].append({
                "batch": batch, "contender": n, "seconds_per_epoch": sec, "epoch_seconds": times[n],
                "late_to_first": late_to_first(times[n]),
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
