"""The `gpunet` command line (typer). User errors print one line and exit 2, without a traceback."""

from __future__ import annotations

import functools
import inspect
import platform
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import typer
from rich.console import Console

from gpunet.core.backend import DEVICES
from gpunet.runs.config import DEFAULT_CONFIG, KEYS, load_config, parse_value, parse_values
from gpunet.data.datasets import DATASETS
from gpunet.errors import GpunetError, printable
from gpunet.version import __version__

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
SERVE_MODULES = ("fastapi", "starlette", "uvicorn", "anyio", "h11")  # what apps/serve.py imports from the serve extra
app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                  help="Train a hand-derived 784-128-10 MNIST network on NumPy (CPU) or CuPy (GPU).")


def choice(name: str, values: Any) -> type[Enum]:
    """A str Enum of `values`, which typer shows and checks as a choice."""
    return Enum(name, {v: v for v in values}, type=str)  # type: ignore[return-value]


Device = choice("Device", DEVICES)  # the constants in gpunet/core/backend.py
DatasetName = choice("DatasetName", DATASETS)  # the registry in gpunet/data/datasets.py
THREADS_HELP = ("BLAS threads of the training steps: a count, or auto (one thread for small products, else the "
                "faster count as measured on the run's own steps, checked again now and then).")


def device_option() -> Any:
    """The --device option, the same in every command: auto picks cuda when it is usable, else cpu."""
    return typer.Option(Device("auto"), help="cpu, cuda, or auto (cuda when usable, else cpu).")


def stderr_console() -> Console:
    """The console for progress and notes: lines are never hard-wrapped, so logs keep whole paths."""
    return Console(stderr=True, soft_wrap=True)


def fail(message: str) -> None:
    """Print `error: message` on stderr and exit 2."""
    typer.echo(f"error: {printable(message, 4000)}", err=True)  # a message may quote a hostile file
    raise typer.Exit(2)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GpunetError (and running out of memory) into one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GpunetError as e:
            fail(str(e))
        except MemoryError:
            fail("out of memory; try a smaller --hidden, --batch-size or --limit, or --dtype float32")
    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpunet {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """gpunet: one copy of hand-derived training equations, run on the CPU or a CUDA GPU."""


def config_options(fn: Callable[..., Any] | None = None, *, lists: bool = False) -> Any:
    """Give command `fn` one option per config key (gpunet/runs/config.py); `fn` gets them as `overrides`, a dict of
    key -> value, None where the option was not given. With `lists` (`@config_options(lists=True)`), each option
    takes comma-separated values and `fn` gets key -> list of values."""
    if fn is None:
        return functools.partial(config_options, lists=lists)
    hints = typing.get_type_hints(fn)
    params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()
              if p.name != "overrides"]
    defaults = load_config().as_dict()  # shown in --help: the packaged default config's values
    for name, key in KEYS.items():
        if lists:
            kind, help = str, f"{key.help} A list a,b,c sweeps it (a;b;c for values with commas)."
        else:
            kind, help = choice(f"{name}_choice", key.choices) if key.choices else key.cli_type, key.help
        value = defaults[name]
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        shown = f"from the config: {text} in {DEFAULT_CONFIG}"
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                        default=typer.Option(None, help=help, show_default=shown)))

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        overrides = {}
        for name, key in KEYS.items():
            value = kwargs.pop(name)
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, str):
                value = parse_values(name, value) if lists else parse_value(name, value)
            overrides[name] = value
        return fn(*args, overrides=overrides, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@app.command()
@user_errors
@config_options
def train(
    overrides: dict[str, Any],
    config: Optional[str] = typer.Option(None, "--config", "-c", help="A packaged config's name (`gpunet configs` "
                                         "lists them: default, seed) or a TOML file's path (default: default)."),
    device: Device = device_option(),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<UTC timestamp>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this directory from its checkpoint "
                                          "(its config is kept; only --epochs may be raised)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the run's PNG plots at the end."),
    dataset: Optional[DatasetName] = typer.Option(None, help="The dataset; mnist unless given (or the resumed run's)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset's files (searched first)."),
    threads: str = typer.Option("auto", help=THREADS_HELP),
) -> None:
    """Train a network and save it in a run directory.

    Trains on MNIST (or --dataset fashion-mnist) and saves metrics.json, model.npz and checkpoint.npz in the run
    directory. A dataset not found on this machine is downloaded first (see `gpunet data`)."""
    from gpunet.core.backend import get_backend
    from gpunet.data.load import load_dataset
    from gpunet.core.threads import parse_threads
    from gpunet.runs.report import ConsoleReporter, summary
    from gpunet.runs.train import plan_run, run_plan

    console = stderr_console()
    threads_asked = parse_threads(threads)
    plan = plan_run(config, overrides, out, resume, dataset.value if dataset is not None else None)
    for note in plan.notes:
        console.print(note)
    backend = get_backend(device.value, plan.cfg.dtype)
    if device.value == "auto":
        console.print(f"--device auto chose {backend.name}")
    train_split, test_split = load_dataset(plan.dataset, data_dir, console)
    metrics = run_plan(plan, backend, train_split, test_split, ConsoleReporter(console), threads_asked)
    if metrics["status"] == "interrupted":
        typer.echo(summary(metrics, plan.run_dir, backend.name), err=True)
        raise typer.Exit(143 if metrics["signal"] == "SIGTERM" else 130)  # 128 + the signal's number, as shells do
    typer.echo(summary(metrics, plan.run_dir, backend.name))
    if plots:
        from gpunet.runs.plots import plot_run

        paths = plot_run(plan.run_dir, test_split)
        typer.echo(f"plots: {', '.join(p.name for p in paths)}")


@app.command("configs")
def configs_list() -> None:
    """List the packaged configs for `--config NAME`, each with what its recipe is."""
    from gpunet.runs.config import DEFAULT_CONFIG, describe, packaged_configs

    for name, f in packaged_configs().items():
        mark = " (used without --config)" if name == DEFAULT_CONFIG else ""
        typer.echo(f"{name:<10} {describe(f.read_text(encoding='utf-8'))}{mark}")


@app.command()
@user_errors
@config_options(lists=True)
def sweep(
    overrides: dict[str, Any],
    out: Optional[Path] = typer.Option(None, help="The sweep's folder: one run directory per point, sweep.json, "
                                       "sweep.csv, sweep.png (default: runs/sweep-<UTC timestamp>). Run the same "
                                       "command with this --out again to continue a stopped sweep."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="The config the grid varies: a packaged "
                                         "config's name (`gpunet configs`) or a TOML file (default: default)."),
    workers: int = typer.Option(1, min=1, help="Points trained at once, each in its own process."),
    device: Device = device_option(),
    dataset: DatasetName = typer.Option(DatasetName("mnist"), help="The dataset."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset's files (searched first)."),
    scheduler: Optional[str] = typer.Option(None, help="Run the points on the Dask cluster whose scheduler is at "
                                            "this address (tcp://HOST:PORT; pip install 'gpunet[dask]'). Its "
                                            "workers find the dataset on their own machines (--data-dir is a "
                                            "folder there); the results come back here."),
    threads: str = typer.Option("auto", help=THREADS_HELP + " With --workers over 1, auto gives each worker its "
                                "share of the cores (one each for 2 workers on 2 cores)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw each point's curves.png and the sweep's "
                               "sweep.png."),
) -> None:
    """Train a grid of configs and rank them on the validation split.

    The grid is every combination of the comma-separated values given, e.g. --lr 0.05,0.1 --seed 0,1,2. The test
    set is never evaluated. Prints the best."""
    from gpunet.core.threads import parse_threads
    from gpunet.runs.sweep import run_sweep, sweep_report
    from gpunet.runs.train import default_run_dir

    out = out or default_run_dir("sweep-")
    result = run_sweep(config, overrides, out, workers, device.value, dataset.value, data_dir, scheduler,
                       say=typer.echo, threads=parse_threads(threads), plots=plots)
    for line in sweep_report(result):
        typer.echo(line)
    if result["status"] == "interrupted":
        typer.echo(f"interrupted; finished points are kept: continue with the same command and --out {out}",
                   err=True)
        raise typer.Exit(130)
    if result["failed"]:
        raise GpunetError(f"{len(result['failed'])} points could not run ({', '.join(result['failed'])}; their "
                          f"errors are above); fix that and run the same command with --out {out} again to run "
                          "them (finished points are kept)")


@app.command()
def info() -> None:
    """Show versions, and whether CuPy and a CUDA GPU are usable."""
    from gpunet.core.devices import cuda_status

    typer.echo(f"gpunet {__version__}")
    typer.echo(f"python {platform.python_version()} ({sys.executable})")
    typer.echo(f"numpy {np.__version__}")
    typer.echo(cuda_status())


@app.command()
@user_errors
def evaluate(
    model: Path = typer.Argument(..., help="A model.npz or a run directory."),
    device: Device = device_option(),
    dataset: Optional[DatasetName] = typer.Option(None, help="Test set (default: the one the model was trained on)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset's files (searched first)."),
) -> None:
    """Score a model on its test set (the test files only).

    Prints test loss and accuracy, per-class precision, recall and F1, and the confusion matrix."""
    from gpunet.core.backend import get_backend
    from gpunet.data.load import DeviceData, load_test
    from gpunet.data.datasets import class_names
    from gpunet.runs.evaluate import evaluate_model
    from gpunet.files import json_text
    from gpunet.runs.store import load_model

    backend = get_backend(device.value)
    net, header = load_model(model, backend)
    name = dataset.value if dataset is not None else header.get("dataset", "mnist")
    test_split = load_test(name, data_dir, stderr_console())
    report = evaluate_model(net, DeviceData(backend, test_split), name, class_names(name))
    typer.echo(json_text({"model": str(model), **report.as_dict()}) if json_out else report.table())


@app.command()
@user_errors
def predict(
    model: Path = typer.Argument(..., help="A model.npz or a run directory."),
    images: list[Path] = typer.Argument(..., help="PNG or JPEG files, each showing one digit."),
    show: Optional[Path] = typer.Option(None, help="Save a PNG of each 28x28 input beside its probabilities."),
    device: Device = device_option(),
    json_out: bool = typer.Option(False, "--json", help="Print path, top class and all probabilities as JSON."),
) -> None:
    """Classify images of digits (PNG, JPEG) with a model.

    Prints the top-3 classes of each image, after MNIST-style preprocessing (exit 2 if any file could not be
    read)."""
    from gpunet.core.backend import get_backend
    from gpunet.files import json_text
    from gpunet.apps.predict import predict_files
    from gpunet.runs.store import load_model

    net, header = load_model(model, get_backend(device.value))
    classes = header["classes"]
    results = predict_files(net, images)
    for r in results:
        if r.error is not None:
            typer.echo(r.line(classes), err=True)
        elif not json_out:
            typer.echo(r.line(classes))
    if json_out:
        typer.echo(json_text([r.as_dict(classes) for r in results]))
    good = [r for r in results if r.error is None]
    if show is not None and good:
        import numpy as np

        from gpunet.runs.plots import inputs

        inputs(np.stack([r.image for r in good]), np.stack([r.probs for r in good]),
               [Path(r.path).name for r in good], classes, show)
        typer.echo(f"saved {show}", err=True)
    if len(good) < len(results):
        raise typer.Exit(2)


@app.command()
@user_errors
def plot(
    run_dir: Path = typer.Argument(..., help="A run directory from gpunet train."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset's files (searched first)."),
) -> None:
    """Draw a run's plots into its run directory.

    curves.png and weights.png need only the run; confusion.png, predictions.png and mistakes.png also need the
    test set, and are skipped, saying why, when it cannot be loaded."""
    from gpunet.runs.plots import plot_run

    for path in plot_run(run_dir, data_dir=data_dir, console=stderr_console()):
        typer.echo(str(path))


@app.command()
@user_errors
def serve(
    model: Optional[Path] = typer.Argument(None, help="A model.npz or run directory "
                                           "(default: the newest run under runs/)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 opens it to your network)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0 picks a free one)."),
    device: Device = device_option(),
    allow_host: list[str] = typer.Option([], "--allow-host", metavar="NAME",
                                         help="Also answer requests whose Host header names NAME (repeatable); "
                                         "by default only localhost and --host."),
) -> None:
    """Serve a page to draw a digit on, with live predictions.

    Also a JSON API (needs the serve extra). SECURITY.md says what it accepts and refuses."""
    try:
        from gpunet.apps.serve import serve as run_server
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in SERVE_MODULES:
            raise
        from gpunet.install import pip_extra

        fail(f"gpunet serve needs FastAPI and uvicorn ({missing} is missing): {pip_extra('serve')}")
    from gpunet.core.backend import get_backend

    run_server(model, get_backend(device.value), host, port, say=typer.echo, allow_hosts=allow_host)


@app.command()
@user_errors
def bench(
    device: Device = device_option(),
    batch_sizes: str = typer.Option("128,1024,full", help="Comma-separated batch sizes; 'full' is full-batch GD."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Timed epochs per contender (default 5, after one "
                                         "warm-up epoch); with --whole-run, the recipe's epochs (default: the "
                                         "config's)."),
    limit: Optional[int] = typer.Option(None, min=0, help="Use the first N training samples only (0 = all 60,000)."),
    contenders: str = typer.Option("gpunet,numpy,pytorch,pytorch-gather", help="Which to time; pytorch (the lean "
                                   "loop) and pytorch-gather only when importable; --whole-run times gpunet and pytorch."),
    memory: bool = typer.Option(True, help="Measure each contender's peak memory in a fresh subprocess."),
    cuda_graph: bool = typer.Option(False, help="Replay gpunet's step as a CUDA graph (cuda only)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    whole_run: bool = typer.Option(False, "--whole-run", help="Time complete training runs of --config's recipe "
                                   "(gpunet train against PyTorch) instead of epochs at --batch-sizes."),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="--whole-run: the recipe, a packaged "
                                         "config's name or a TOML file (default: default)."),
    repeats: int = typer.Option(3, min=1, help="--whole-run: timed runs per contender, in turns, after a warm-up run."),
    threads: str = typer.Option("auto", help="gpunet's BLAS threads at its defaults, as on `gpunet train`: a count, "
                                "or auto."),
    busy: int = typer.Option(0, min=0, help="Also time every contender with this many busy-loop processes "
                             "running (each spins on a core; up to 4 per core; all stopped when the bench "
                             "ends), beside quiet."),
    best: bool = typer.Option(True, "--best/--no-best", help="Also time each contender at each fixed thread "
                              "count (1 and the cores; on the CPU) and compare it with its fastest."),
) -> None:
    """Time gpunet's training against plain NumPy and PyTorch.

    Times the training step on the same data (with --whole-run: complete training runs of a config's recipe
    against PyTorch) and prints a table."""
    from gpunet.bench import run_bench, run_whole

    if whole_run:
        run_whole(device.value, config, epochs, limit, contenders, repeats, json_out, threads=threads, busy=busy,
                  best=best)
    else:
        run_bench(device.value, batch_sizes, epochs or 5, limit or 0, contenders, memory, cuda_graph, json_out,
                  threads=threads, busy=busy, best=best)


@app.command()
@user_errors
def check(
    device: Device = device_option(),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    seconds: float = typer.Option(2.0, min=0.0, help="Seconds the speed line times (half per batch size)."),
    samples: int = typer.Option(60_000, min=128, help="Synthetic samples of the speed line (MNIST's 60,000)."),
    threads: str = typer.Option("auto", help="BLAS threads of the speed line's steps: a count, or auto (as "
                                "`gpunet train` chooses them)."),
    full: bool = typer.Option(False, "--full", help="Then the proof for a new GPU machine: 2 epochs of train eagerly "
                              "and as a CUDA graph, a resume, evaluate, a serve request and a short bench."),
) -> None:
    """Check gpunet's gradients, devices and speed on this machine.

    Checks the environment, gradients against central differences, float32 against a float64 CPU reference, 20
    training steps against the CPU, CUDA-graph replay against eager steps (cuda), and a speed line. Exit 0 only
    when every check passes, 1 when one fails."""
    import json

    from gpunet.apps.check import difference_text, report_lines, run_check
    from gpunet.core.threads import parse_threads

    if full:
        from gpunet.apps.proof import full_rows
    report = run_check(device.value, samples, seconds, parse_threads(threads), full_rows if full else None)
    typer.echo(json.dumps(report, indent=2) if json_out else "\n".join(report_lines(report)))
    failed = [r for r in report["checks"] if not r["passed"]]
    for r in failed:
        typer.echo(f"FAIL: {r['name']}: {difference_text(r)} (tolerance {r['tolerance']:g})", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def export(
    model: Path = typer.Argument(..., help="A model.npz or a run directory."),
    onnx_out: Path = typer.Option(..., "--onnx", help="Write the network here as an ONNX graph."),
) -> None:
    """Export a model as ONNX.

    The graph is Gemm, Relu, Softmax, with the class names as metadata (needs the onnx extra)."""
    from gpunet.core.backend import get_backend
    from gpunet.runs.export import OPSET, save_onnx
    from gpunet.runs.store import load_model

    net, header = load_model(model, get_backend("cpu"))
    save_onnx(onnx_out, net.state_dict(), header["classes"],
              {"dataset": header["dataset"], "input_scale": header.get("pixel_scale", "x / 255")})
    typer.echo(f"saved {onnx_out} (ONNX opset {OPSET}, input 'input' (N, {net.sizes[0]}) float32 pixels "
               f"{header.get('pixel_scale', 'x / 255')}, output 'probabilities' (N, {net.sizes[-1]}))")


data_app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS,
                       help="Find, download and verify the datasets (mnist, fashion-mnist).")
app.add_typer(data_app, name="data")


@data_app.command("list")
@user_errors
def data_list(data_dir: Optional[Path] = typer.Option(None, help="A folder to search first.")) -> None:
    """List each dataset, where a verified copy was found, or that it is missing."""
    from gpunet.data.locate import list_lines

    for line in list_lines(data_dir):
        typer.echo(line)


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: DatasetName = typer.Argument(..., help="The dataset to download."),
    force: bool = typer.Option(False, "--force", help="Download every file again, replacing the cached copy."),
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds to wait to connect and for each read before the next mirror."),
) -> None:
    """Download a dataset into the cache, each file checked by its SHA-256.

    The cache is $XDG_CACHE_HOME/gpunet/NAME (default ~/.cache/gpunet/NAME)."""
    from gpunet.data.datasets import get_dataset
    from gpunet.data.fetch import fetch

    folder = fetch(get_dataset(name.value), force=force, timeout=timeout, console=stderr_console())
    typer.echo(f"{name.value}: verified files in {folder}")


@data_app.command("verify")
@user_errors
def data_verify(
    name: Optional[DatasetName] = typer.Argument(None, help="One dataset; all of them when left out."),
    data_dir: Optional[Path] = typer.Option(None, help="A folder to search first."),
) -> None:
    """Check every copy on the search path against the pinned SHA-256 digests.

    Exit 2 if one is damaged."""
    from gpunet.data.locate import verify

    verify([name.value] if name is not None else list(DATASETS), data_dir, typer.echo)


def unwrap_help(*typers: typer.Typer) -> None:
    """Give each command its docstring as help with the paragraphs unwrapped, so that --help fills the terminal's
    width instead of keeping the source's line breaks (the first paragraph is the command list's one-line summary)."""
    for t in typers:
        for info in t.registered_commands:
            doc = inspect.getdoc(info.callback) or ""
            info.help = "\n\n".join(" ".join(p.split("\n")) for p in doc.split("\n\n"))


unwrap_help(app, data_app)
