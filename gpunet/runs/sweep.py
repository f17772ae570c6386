"""`gpunet sweep`: train a grid of configs and compare them on the validation split only.

The grid is the product of the values given for each config key. Each point trains into its own run directory
under the sweep's folder, named after its values, with the test set left out entirely (`train` is given none:
no model of a sweep is ever evaluated on it). A point whose directory holds a finished metrics.json (completed,
or diverged) is skipped, so running the same command again continues a stopped sweep. The folder gets
sweep.json (the points: config, validation accuracy and loss, best epoch, training seconds, run directory),
sweep.csv (the same as a table) and sweep.png (validation accuracy against each swept key, the seeds' spread
shown); each point's run directory gets its curves.png. Points run one after another, in `workers` spawned
processes, or on a Dask cluster (`scheduler`, the gpunet[dask] extra) through its client's concurrent.futures
executor. However it runs, a point trains in a scratch folder and comes back as its metrics and files, which this
process writes into the point's run directory, so Dask workers need no disk shared with it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import shutil
import socket
import statistics
import tempfile
from concurrent.futures import CancelledError, Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console

from gpunet.core.backend import Backend, get_backend
from gpunet.core.threads import worker_threads
from gpunet.runs.config import KEYS, MAX_POINTS, Config, load_config
from gpunet.data.load import load_dataset
from gpunet.data.datasets import Split, class_names
from gpunet.errors import GpunetError
from gpunet.files import atomic_write, make_dir, read_json, write_json
from gpunet.install import pip_extra
from gpunet.runs.store import MAX_METRICS
from gpunet.runs.train import train

MAX_NAME = 200  # characters of a point's directory name (file systems allow 255 bytes)
FINISHED = ("completed", "diverged")  # a point whose metrics.json says so is not run again
RESULTS = ("val_accuracy", "val_loss", "best_epoch", "train_seconds")


def expand_grid(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the values given for each key (in KEYS order, the last key varying fastest);
    GpunetError, before any is made, for more than MAX_POINTS."""
    keys = [k for k in KEYS if values.get(k)]
    count = math.prod(len(values[k]) for k in keys)
    if count > MAX_POINTS:
        raise GpunetError(f"the grid has {count:,} points, over the limit of {MAX_POINTS:,}; give fewer values")
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values[k] for k in keys))]


def config_value_text(value: Any) -> str:
    """A config value as a directory name, a CSV cell or a plot label: 0.1, 128, 256x128, momentum. Distinct
    values give distinct texts (a float is written with the fewest digits that read back as that float)."""
    if isinstance(value, list):
        return "x".join(map(str, value))
    return repr(value) if isinstance(value, float) else str(value)


def point_name(point: dict[str, Any]) -> str:
    """The run directory of a point: e.g. lr=0.1_batch_size=64_seed=0; a name over MAX_NAME characters is cut
    and ends in a digest of the whole, so names stay unique and within what file systems allow."""
    name = "_".join(f"{k}={config_value_text(v)}" for k, v in point.items()) or "point"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 17]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return name


def summary(point: dict[str, Any], run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """A point of sweep.json (no test figures: a sweep never has any)."""
    return {"point": point, "config": metrics["config"], "status": metrics["status"],
            **{k: metrics.get(k) for k in RESULTS}, "run_dir": str(run_dir)}


def finished_metrics(run_dir: Path, cfg: Config, dataset: str) -> dict[str, Any] | None:
    """The metrics of a finished run of `cfg` in `run_dir`, None when it has not finished; GpunetError when the
    directory holds a run of another config (the sweep's folder was used for another sweep)."""
    try:
        metrics = read_json(run_dir / "metrics.json", MAX_METRICS, "metrics file")
    except GpunetError:
        return None  # absent, or a run stopped while writing: run the point again
    if not isinstance(metrics, dict) or metrics.get("status") not in FINISHED:
        return None
    if metrics.get("config") != cfg.as_dict() or metrics.get("dataset") != dataset:
        raise GpunetError(f"{run_dir} holds a run of another config or dataset than this sweep's point; "
                          "give the sweep another --out (or remove that directory)")
    return metrics


def failure(error: Exception | str) -> dict[str, Any]:
    """A point that could not run: its error and the machine that says so."""
    return {"error": str(error), "host": socket.gethostname()}


def train_point(cfg: Config, backend: Backend, train_split: Split, dataset: str, threads: int | str = "auto",
                plots: bool = True) -> dict[str, Any]:
    """Train one point in a scratch folder, without a test set, its steps on `threads` BLAS threads: {"metrics",
    "files" (file name -> bytes: metrics.json, model.npz, checkpoint.npz, and with `plots` curves.png, drawn from
    the history alone)}. A diverged point is a result too (status "diverged", its error in the metrics); one that
    cannot train is `failure`."""
    with tempfile.TemporaryDirectory(prefix="gpunet-point-") as scratch:
        run_dir = Path(scratch)
        try:
            metrics = train(cfg, backend, train_split, None, run_dir, dataset=dataset, classes=class_names(dataset),
                            threads=threads)
        except GpunetError as e:
            diverged = finished_metrics(run_dir, cfg, dataset)
            if diverged is None or diverged["status"] != "diverged":
                return failure(e)
            metrics = {**diverged, "error": str(e)}
        if plots and metrics["history"]:  # a point that diverged in its first epoch has no curves
            from gpunet.runs.plots import curves

            curves(metrics["history"], run_dir / "curves.png", metrics.get("best_epoch"))
        return {"metrics": metrics, "files": {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}}


def store_point(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a point's files into `run_dir` (what an earlier attempt left there is removed first), each atomically
    and metrics.json last: a point stopped while being written is not finished, and runs again."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    make_dir(run_dir, "point's run directory")
    for name in sorted(files, key=lambda n: n == "metrics.json"):
        atomic_write(run_dir / Path(name).name, lambda f: f.write(files[name]))


@functools.cache
def _worker_split(dataset: str, data_dir: str | None) -> Split:
    """A worker process's training split, read once per process (the test split is dropped at once)."""
    return load_dataset(dataset, Path(data_dir) if data_dir else None, Console(file=io.StringIO()))[0]


def _work(values: dict[str, Any], device: str, dataset: str, data_dir: str | None, threads: int | str,
          plots: bool) -> dict[str, Any]:
    """One point in a worker (a local process or a Dask worker): the data found on its machine, its device."""
    cfg = Config(**values)
    try:
        backend, train_split = get_backend(device, cfg.dtype), _worker_split(dataset, data_dir)
    except GpunetError as e:
        return failure(e)
    return train_point(cfg, backend, train_split, dataset, threads, plots)


@contextlib.contextmanager
def point_pool(workers: int, scheduler: str | None) -> Iterator[tuple[Executor, tuple[type[BaseException], ...]]]:
    """An executor for the points, with the exceptions that mean a point was lost with its worker (or with the
    scheduler): `workers` spawned local processes, or the executor of a Dask client connected to `scheduler`."""
    if scheduler is None:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool, (BrokenProcessPool,)
        return
    try:
        from distributed import Client, KilledWorker
    except ImportError:
        raise GpunetError(f"--scheduler needs Dask's distributed: {pip_extra('dask')}") from None
    try:
        client = Client(scheduler, set_as_default=False)
    except (OSError, ValueError, TypeError) as e:
        raise GpunetError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({e}); start one "
                          "with `dask scheduler` and give the address it prints (tcp://HOST:PORT)") from None
    with client, client.get_executor(pure=False) as pool:  # pure=False: a point is a new task each time it is sent
        yield pool, (KilledWorker, CancelledError)  # a point that killed its workers; the scheduler gone


def groups(points: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """The points that differ only in their seed, pooled: validation accuracy mean and std (0 for one seed),
    best epochs, mean training seconds; best mean first. Diverged points count as failures of their group."""
    pooled: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        pooled.setdefault(json.dumps({k: p["config"][k] for k in keys if k != "seed"}), []).append(p)
    rows = []
    for key, members in pooled.items():
        good = [p for p in members if p["val_accuracy"] is not None]
        accs = [p["val_accuracy"] for p in good]
        rows.append({
            "values": json.loads(key), "seeds": [p["config"]["seed"] for p in members],
            "diverged": len(members) - len(good),
            "val_accuracy_mean": statistics.fmean(accs) if accs else None,
            "val_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "val_loss_mean": statistics.fmean(p["val_loss"] for p in good) if good else None,
            "best_epochs": [p["best_epoch"] for p in good],
            "train_seconds_mean": statistics.fmean(p["train_seconds"] for p in members),
        })
    return sorted(rows, key=lambda r: (r["diverged"] == 0 and r["val_accuracy_mean"] is not None,
                                       r["val_accuracy_mean"] or 0.0), reverse=True)


def best_point(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The point with the highest validation accuracy (then the lowest validation loss)."""
    good = [p for p in points if p["val_accuracy"] is not None]
    return max(good, key=lambda p: (p["val_accuracy"], -p["val_loss"]), default=None)


def write_table(points: list[dict[str, Any]], path: Path) -> None:
    columns = [*KEYS, *RESULTS, "status", "run_dir"]

    def write(f: Any) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for p in points:
            w.writerow([config_value_text(p["config"][k]) for k in KEYS] + [p[k] for k in columns[len(KEYS):]])
    atomic_write(path, write, mode="w")


def panels(points: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[str, list[float], float, float]]]:
    """For each swept key (seed when no other key is swept), each of its values: its label, the validation
    accuracies of all points with that value, and the mean and std over seeds of the best setting with it."""
    pooled = [g for g in groups(points, keys) if g["val_accuracy_mean"] is not None]
    out = {}
    for key in [k for k in keys if k != "seed"] or ["seed"]:
        rows = []
        for value in dict.fromkeys(config_value_text(p["config"][key]) for p in points):
            accs = [p["val_accuracy"] for p in points
                    if config_value_text(p["config"][key]) == value and p["val_accuracy"] is not None]
            best = next((g for g in pooled if key == "seed" or config_value_text(g["values"][key]) == value), None)
            rows.append((value, accs, *((best["val_accuracy_mean"], best["val_accuracy_std"]) if best
                                        else (float("nan"), 0.0))))
        out[key] = rows
    return out


def write_results(points: list[dict[str, Any]], keys: list[str], out: Path, plot: bool) -> None:
    write_json(out / "sweep.json", points)
    write_table(points, out / "sweep.csv")
    if plot and any(p["val_accuracy"] is not None for p in points):
        from gpunet.runs.plots import sweep as sweep_plot

        sweep_plot(panels(points, keys), out / "sweep.png")


def run_sweep(config: str | Path | None, values: dict[str, list[Any]], out: Path, workers: int = 1, device: str = "cpu",
              dataset: str = "mnist", data_dir: Path | None = None, scheduler: str | None = None,
              say: Callable[[str], None] = print, threads: int | str = "auto", plots: bool = True) -> dict[str, Any]:
    """Train every point of the grid `values` (config key -> its values; one value fixes a key) on top of
    `config` into `out`, skipping finished points; write sweep.json, sweep.csv, and with `plots` sweep.png and each
    new point's curves.png (without, a sweep.png left by an earlier run is removed: it would not match
    sweep.json). `out` is made only once the points can run (the data loaded, or the cluster connected), so a
    sweep refused before any work leaves nothing behind. The points run here,
    in `workers` local processes, or on the Dask cluster whose scheduler is at `scheduler` (tcp://HOST:PORT; its
    workers find the data on their own machines, `data_dir` naming a folder there). `threads`: each point's BLAS
    threads ('auto' or a count; with several local workers, 'auto' gives each its share of this machine's cores,
    gpunet.core.threads.worker_threads; on a cluster, as given). Returns {"points", "keys" (the swept keys),
    "fixed" (the keys given one value), "status" ("completed" or "interrupted"), "failed" (the name of each point
    that could not run -> its error)}."""
    if workers < 1:
        raise GpunetError(f"--workers {workers}: give 1 or more processes")
    if scheduler is not None and workers > 1:
        raise GpunetError(f"--workers {workers} with --scheduler: give one of them (--workers runs local "
                          "processes; with --scheduler the cluster's workers run the points)")
    grid = expand_grid(values)
    keys = [k for k in grid[0] if len(values[k]) > 1]  # the swept keys (a key given one value is fixed)
    cfgs = [load_config(config, point) for point in grid]  # every point checked before any work
    if any(cfg.val_size == 0 for cfg in cfgs):
        raise GpunetError("val_size = 0: a sweep compares its points on the validation split; give --val-size N")
    # One backend per dtype, made here (--device cuda refused before any work) unless a cluster's workers run
    # the points: then each worker checks its own device.
    backends = {} if scheduler else {dt: get_backend(device, dt) for dt in dict.fromkeys(cfg.dtype for cfg in cfgs)}
    dirs = [out / point_name(point) for point in grid]
    done = {i: finished_metrics(d, cfg, dataset) for i, (d, cfg) in enumerate(zip(dirs, cfgs))}
    todo = [i for i, m in done.items() if m is None]  # none when every point is finished: then `out` exists
    where = (f" on the Dask cluster at {scheduler}" if scheduler else
             f" in {workers} processes" if workers > 1 else "")
    say(f"sweep of {len(grid)} points into {out}/: {len(grid) - len(todo)} finished already, {len(todo)} to run"
        + (where if todo else ""))
    results = {i: summary(grid[i], dirs[i], m) for i, m in done.items() if m is not None}
    failed: dict[str, str] = {}
    status = "completed"

    def record(i: int, result: dict[str, Any]) -> None:
        """Write a point's result (or say why it has none) and the sweep's results so far."""
        nonlocal status
        name = point_name(grid[i])
        if "error" in result:
            failed[name] = result["error"]
            host = "" if result["host"] == socket.gethostname() else f" on {result['host']}"
            say(f"[failed] {name}: error{host}: {result['error']}")
            return
        if result["metrics"]["status"] == "interrupted":
            status = "interrupted"
            return
        store_point(dirs[i], result["files"])
        results[i] = summary(grid[i], dirs[i], result["metrics"])
        p = results[i]
        line = ("diverged" if p["val_accuracy"] is None else
                f"val {100 * p['val_accuracy']:.2f}% (epoch {p['best_epoch']}), {p['train_seconds']:.1f} s")
        say(f"[{len(results)}/{len(grid)}] {name}: {line}")
        write_results([results[j] for j in sorted(results)], keys, out, plot=False)

    if todo and workers == 1 and scheduler is None:
        train_split = load_dataset(dataset, data_dir)[0]  # the test split is dropped here, never used
        make_dir(out, "sweep's folder")
        for i in todo:
            record(i, train_point(cfgs[i], backends[cfgs[i].dtype], train_split, dataset, threads, plots))
            if status == "interrupted":
                break
    elif todo:
        with point_pool(min(workers, len(todo)), scheduler) as (pool, lost):
            make_dir(out, "sweep's folder")  # once connected: a cluster that is not there leaves no folder
            each = threads if scheduler else worker_threads(threads, min(workers, len(todo)))
            futures = {pool.submit(_work, cfgs[i].as_dict(), device, dataset,
                                   None if data_dir is None else str(data_dir), each, plots): i for i in todo}
            try:
                for future in as_completed(futures):
                    i = futures.pop(future)  # dropped once read: a Dask worker then frees the point's result
                    try:
                        result = future.result()
                    except lost as e:
                        result = failure(f"the worker running it, or the cluster, went away ({type(e).__name__}): "
                                         "killed, or out of memory?")
                    record(i, result)
            except KeyboardInterrupt:
                status = "interrupted"
            finally:
                for future in futures:  # the points not started yet, after Ctrl-C or an error here
                    future.cancel()
    points = [results[i] for i in sorted(results)]
    write_results(points, keys, out, plot=plots)
    if not plots:
        (out / "sweep.png").unlink(missing_ok=True)
    return {"points": points, "keys": keys, "fixed": {k: v for k, v in grid[0].items() if k not in keys},
            "status": status, "failed": failed}


def sweep_report(result: dict[str, Any], top: int = 10) -> list[str]:
    """The best settings on validation (seeds pooled), as a Markdown table, then the best point."""
    points, keys = result["points"], result["keys"]
    shown = [k for k in keys if k != "seed"]
    fixed = ", ".join(f"{k} = {config_value_text(v)}" for k, v in result["fixed"].items())
    lines = ["", f"{len(points)} points; the config's values" + (f" with {fixed}" if fixed else "") + "; seeds pooled:",
             "| " + " | ".join([*shown, "seeds", "validation accuracy", "validation loss", "best epochs", "train s"])
             + " |", "|" + "---|" * (len(shown) + 5)]
    for g in groups(points, keys)[:top]:
        acc = ("diverged" if g["val_accuracy_mean"] is None else
               f"{100 * g['val_accuracy_mean']:.2f}% +- {100 * g['val_accuracy_std']:.2f}"
               + (f" ({g['diverged']} diverged)" if g["diverged"] else ""))
        loss = "-" if g["val_loss_mean"] is None else f"{g['val_loss_mean']:.4f}"
        cells = [*(config_value_text(g["values"][k]) for k in shown), ",".join(map(str, g["seeds"])), acc, loss,
                 ",".join(map(str, g["best_epochs"])), f"{g['train_seconds_mean']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    best = best_point(points)
    if best is not None:
        lines += ["", f"best point on validation: {point_name(best['point'])}: val accuracy "
                  f"{100 * best['val_accuracy']:.2f}%, loss {best['val_loss']:.4f} (epoch {best['best_epoch']}), "
                  f"{best['train_seconds']:.1f} s training; {best['run_dir']}"]
    return lines
