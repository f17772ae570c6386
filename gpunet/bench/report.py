"""What the figures were measured on, the rich tables, and the JSON file."""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_info

from gpunet.core.backend import Backend
from gpunet.data.datasets import NUM_CLASSES
from gpunet.errors import GpunetError
from gpunet.files import write_json


def machine(backend: Backend, torch_threads: int | None) -> dict[str, Any]:
    """CPU model and cores, BLAS library and threads, GPU, load: what the figures were measured on."""
    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "cores": os.cpu_count()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor() or platform.machine()
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    info["blas"] = "; ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture', '?')} kernels, "
                             f"{p.get('num_threads')} threads)" for p in pools) or "unknown"
    info["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                                             "OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    if torch_threads is not None:
        import torch

        info["pytorch"] = f"{torch.__version__} ({torch_threads} threads)"
    info.update(backend.hardware())  # the GPU and CUDA versions, on cuda
    info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return info


def wide(console: Console | None) -> Console:
    """The console to print on; one that writes to a file or a pipe gets room for the whole table."""
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 180)
    return console


def usable_contenders(names: list[str], backend: Backend) -> tuple[list[str], list[str], int | None]:
    """(the contenders that can run, a line for each one skipped, PyTorch's thread count when it runs)."""
    names, skipped = list(names), []
    torch_names = [n for n in names if n.startswith("pytorch")]
    if torch_names:
        reason = None
        if importlib.util.find_spec("torch") is None:
            reason = "not installed (pip install torch)"
        elif backend.name == "cuda":
            import torch

            if not torch.cuda.is_available():
                reason = "installed without CUDA support"
        if reason:
            names = [n for n in names if n not in torch_names]
            skipped += [f"{n} skipped: {reason}" for n in torch_names]
    torch_threads = None
    if any(n.startswith("pytorch") for n in names):
        import torch

        torch_threads = torch.get_num_threads()
    return names, skipped, torch_threads


def check_json_out(json_out: Path | None) -> None:
    """Refuse a --json path whose folder does not exist before any timing starts (GpunetError)."""
    if json_out is not None and not Path(json_out).resolve().parent.is_dir():
        raise GpunetError(f"--json {json_out}: no such folder; give a path in an existing folder")


def write_json_report(report: dict[str, Any], json_out: Path | None) -> None:
    if json_out is not None:
        write_json(Path(json_out), report)  # atomic; a folder that cannot be written is one GpunetError line


def print_machine(m: dict[str, Any], console: Console) -> None:
    t = Table(title="machine", show_header=False)
    for key in ("cpu", "cores", "blas", "pytorch", "gpu", "cupy", "numpy", "python", "env", "load_average"):
        if key in m and m[key] not in (None, {}):
            t.add_row(key, str(m[key]))
    console.print(t)


def print_report(report: dict[str, Any], console: Console) -> None:
    print_machine(report["machine"], console)
    memory = "peak GPU MiB" if report["device"] == "cuda" else "peak RSS MiB"  # while training
    busy = report.get("busy", 0)
    r = Table(title=f"training epoch on {report['device']}: {report['samples']} samples, "
                    f"{'-'.join(map(str, report['sizes']))}, float32, median of {report['epochs']} epochs"
                    + (", CUDA graph" if report["cuda_graph"] else "")
                    + (f"; busy: {busy} busy-loop process(es) running" if busy else ""))
    for col in ("batch", "contender", "threads", *(["load"] if busy else []), "s/epoch", "samples/s", "vs pytorch",
                "vs best", "GFLOP/s", "% sgemm", "x GEMM floor", "late/first", memory, "train loss"):
        r.add_column(col, justify="left" if col in ("batch", "contender", "threads", "load") else "right")
    for row in report["results"]:
        r.add_row(str(row["batch"]), row["contender"], row["threads"], *([row["load"]] if busy else []),
                  f"{row['seconds_per_epoch']:.4f}", f"{row['samples_per_second']:,.0f}",
                  ratio(row["ratio_to_pytorch"]), ratio(row["ratio_to_best"]),
                  f"{row['gflops']:.1f}", f"{100 * row['fraction_of_sgemm']:.0f}%",
                  f"{row['ratio_to_gemm_floor']:.2f}", f"{row['late_to_first']:.2f}",
                  "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}",
                  f"{row['train_loss']:.4f}")
    console.print(r)
    if busy:
        print_quiet_and_busy(report["results"], busy, "seconds_per_epoch", "seconds per epoch", console)
    floors = {row["batch"]: (row["sgemm_gflops"], row["gemm_floor_seconds"]) for row in report["results"]}
    console.print("GEMM floor: " + "; ".join(f"batch {b}: sgemm {g:.0f} GFLOP/s at the step's shapes, "
                                             f"{s:.4f} s/epoch" for b, (g, s) in floors.items())
                  + " (shapes: the whole batch's or one row chunk's, the faster)")
    console.print("vs pytorch: against the faster PyTorch row at its thread defaults, of the batch size and load; "
                  "vs best: against the contender's fastest fixed thread count there; late/first: the median of the "
                  "later half of the timed epochs over the first")
    for line in report["skipped"]:
        console.print(line)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_quiet_and_busy(results: list[dict[str, Any]], busy: int, seconds: str, title: str,
                         console: Console) -> None:
    """Each contender and thread setting (at each batch size, if any) quiet and busy side by side: `seconds`
    of each, and busy over quiet."""
    t = Table(title=f"quiet and with {busy} busy-loop process(es): {title}")
    batches = "batch" in results[0]
    for col in (*(["batch"] if batches else []), "contender", "threads quiet", "threads busy", "quiet s", "busy s",
                "busy/quiet"):
        t.add_column(col, justify="right" if col.endswith((" s", "/quiet")) else "left")
    quiet = {(r.get("batch"), r["contender"], r["setting"]): r for r in results if r["load"] == "quiet"}
    for r in (r for r in results if r["load"] == "busy"):
        q = quiet[r.get("batch"), r["contender"], r["setting"]]
        t.add_row(*([str(r["batch"])] if batches else []), r["contender"], q["threads"], r["threads"],
                  f"{q[seconds]:.4f}", f"{r[seconds]:.4f}", f"{r[seconds] / q[seconds]:.2f}x")
    console.print(t)


def print_whole(report: dict[str, Any], console: Console) -> None:
    print_machine(report["machine"], console)
    c = report["config"]
    recipe = (f"{'-'.join(map(str, [784, *c['hidden'], NUM_CLASSES]))}, {c['epochs']} epochs at batch "
              f"{c['batch_size']}, {c['optimizer']} lr {c['lr']:g} ({c['schedule']}), {c['dtype']}")
    t = Table(title=f"whole training run on {report['device']}: {report['config_path']} ({recipe}), "
                    f"{report['train_samples']} train / {report['test_samples']} test samples, "
                    f"median of {report['repeats']} runs")
    busy = report.get("busy", 0)
    for col in ("contender", "threads", *(["load"] if busy else []), "wall s", "of which epochs s", "test accuracy",
                "vs pytorch", "vs best"):
        t.add_column(col, justify="left" if col in ("contender", "threads", "load") else "right")
    for row in report["results"]:
        t.add_row(row["contender"], row["threads"], *([row["load"]] if busy else []), f"{row['wall_seconds']:.2f}",
                  f"{row['epoch_seconds']:.2f}", f"{100 * row['test_accuracy']:.2f}%", ratio(row["ratio_to_pytorch"]),
                  ratio(row["ratio_to_best"]))
    console.print(t)
    if busy:
        print_quiet_and_busy(report["results"], busy, "epoch_seconds", "seconds of training (the run's epochs, as "
                             "`gpunet train` reports them)", console)
    console.print(f"included: {report['included']}")
    for line in report["skipped"]:
        console.print(line)
