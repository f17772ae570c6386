"""The `gpunet` command line (typer). User errors print one line and exit 2, without a traceback."""

from __future__ import annotations

import functools
import platform
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import typer
from rich.console import Console

import gpunet
from gpunet.errors import GpunetError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train a hand-derived 784-128-10 MNIST network on NumPy (CPU) or CuPy (GPU).")


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Optim(str, Enum):
    gd = "gd"
    momentum = "momentum"
    adam = "adam"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


def fail(message: str) -> None:
    """Print `error: message` on stderr and exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn GpunetError into one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GpunetError as e:
            fail(str(e))
    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpunet {gpunet.__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """gpunet: one copy of hand-derived training equations, run on the CPU or a CUDA GPU."""


def parse_hidden(text: str) -> list[int]:
    """'128' or '256,128' -> [128] or [256, 128]."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        raise GpunetError(f"--hidden {text!r}: give widths as integers, e.g. 128 or 256,128") from None
    return widths


def parse_batch_size(text: str) -> int | str:
    if text == "full":
        return text
    try:
        return int(text)
    except ValueError:
        raise GpunetError(f"--batch-size {text!r}: give a positive integer or 'full'") from None


@app.command()
@user_errors
def train(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML config [default: configs/default.toml]."),
    device: Device = typer.Option(Device.auto, help="cpu, cuda, or auto (cuda when usable, else cpu)."),
    epochs: Optional[int] = typer.Option(None, help="Number of passes over the training set."),
    lr: Optional[float] = typer.Option(None, help="Learning rate alpha."),
    batch_size: Optional[str] = typer.Option(None, help="Samples per step, or 'full' for full-batch descent."),
    hidden: Optional[str] = typer.Option(None, help="Hidden widths: 128, or 256,128 for two layers."),
    optimizer: Optional[Optim] = typer.Option(None, help="gd (the seed's rule), momentum, or adam."),
    seed: Optional[int] = typer.Option(None, help="Seed for the initial weights and the shuffles."),
    dtype: Optional[DType] = typer.Option(None, help="Float type of the arrays."),
    limit: Optional[int] = typer.Option(None, help="Train on the first N samples only (0 = all)."),
    out: Optional[Path] = typer.Option(None, help="Run directory [default: runs/<UTC timestamp>]."),
) -> None:
    """Train on the bundled MNIST and save metrics.json and model.npz in a run directory."""
    from gpunet.backend import get_backend
    from gpunet.config import load_config
    from gpunet.data import load_mnist
    from gpunet.train import default_run_dir, prepare_run_dir, train as run_training

    overrides = {
        "epochs": epochs, "lr": lr, "seed": seed, "limit": limit,
        "batch_size": None if batch_size is None else parse_batch_size(batch_size),
        "hidden": None if hidden is None else parse_hidden(hidden),
        "optimizer": None if optimizer is None else optimizer.value,
        "dtype": None if dtype is None else dtype.value,
    }
    cfg = load_config(config, overrides)
    backend = get_backend(device.value, cfg.dtype)
    console = Console(stderr=True)
    if device is Device.auto:
        console.print(f"--device auto chose {backend.name}")
    train_split, test_split = load_mnist()
    run_dir = prepare_run_dir(out or default_run_dir())
    metrics = run_training(cfg, backend, train_split, test_split, run_dir, console)
    typer.echo(f"test accuracy {100 * metrics['test_accuracy']:.2f}% after {cfg.epochs} epochs, "
               f"{metrics['train_seconds']:.1f} s training on {backend.name}; saved {run_dir}/")


@app.command()
def info() -> None:
    """Versions, and whether CuPy and a CUDA GPU are usable."""
    from gpunet.backend import gpu_info, install_hint

    typer.echo(f"gpunet {gpunet.__version__}")
    typer.echo(f"python {platform.python_version()} ({sys.executable})")
    typer.echo(f"numpy {np.__version__}")
    try:
        import cupy
    except ImportError:
        typer.echo(f"cupy not installed (for a GPU: {install_hint()})")
        return
    except Exception as e:
        typer.echo(f"cupy failed to import: {e}")
        return
    typer.echo(f"cupy {cupy.__version__}")
    try:
        if not cupy.is_available():
            typer.echo("gpu none usable (no CUDA device or driver)")
            return
        g = gpu_info(cupy)
    except Exception as e:
        typer.echo(f"gpu none usable ({e})")
        return
    typer.echo(f"gpu {g['name']}, {g['memory_gib']} GiB ({g['free_gib']} free), compute capability "
               f"{g['compute_capability']}, CUDA runtime {g['cuda_runtime']}, driver supports CUDA {g['cuda_driver']}")
