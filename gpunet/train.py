"""The training loop: data resident on the device, one host read per epoch, a run directory at the end."""

from __future__ import annotations

import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

import gpunet
from gpunet.backend import Backend
from gpunet.config import Config
from gpunet.data import NUM_CLASSES, Split, to_features
from gpunet.errors import GpunetError
from gpunet.model import MLP, one_hot
from gpunet.optim import learning_rate, make_optimizer
from gpunet.store import save_model, write_json

LONG_EPOCH_STEPS = 50  # show a second bar over batches when an epoch has at least this many steps


class DeviceData:
    """Features, labels and one-hot targets of one split, copied to the device once."""

    def __init__(self, backend: Backend, split: Split, limit: int = 0):
        n = len(split.labels) if limit == 0 else min(limit, len(split.labels))
        self.m = n
        self.X = backend.asarray(to_features(split.images[:n]))  # (m, 784)
        self.y = backend.asarray(split.labels[:n], dtype=np.int32)  # (m,)
        self.Y = one_hot(backend.xp, self.y, NUM_CLASSES, backend.dtype)  # (m, 10)


def default_run_dir() -> Path:
    return Path("runs") / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def prepare_run_dir(out: Path) -> Path:
    """Create `out`; refuse one that already holds a run, so nothing saved is overwritten."""
    out = Path(out)
    if (out / "metrics.json").exists() or (out / "model.npz").exists():
        raise GpunetError(f"{out} already holds a run; choose another --out or remove it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpunetError(f"{out}: cannot create the run directory ({e.strerror or e})") from None
    return out


def versions(backend: Backend) -> dict[str, str]:
    v = {"gpunet": gpunet.__version__, "python": platform.python_version(), "numpy": np.__version__}
    if backend.name == "cuda":
        v["cupy"] = backend.xp.__version__
    return v


def evaluate(net: MLP, data: DeviceData) -> tuple[Any, Any]:
    """(mean loss, accuracy) on `data`, both 0-d device arrays (no sync)."""
    AL = net.predict_proba(data.X)
    return net.loss(AL, data.Y), (AL.argmax(axis=1) == data.y).mean()


def train(cfg: Config, backend: Backend, train_split: Split, test_split: Split, out: Path,
          console: Console | None = None, dataset: str = "mnist") -> dict[str, Any]:
    """Train per `cfg`, write `out`/metrics.json and `out`/model.npz, and return the metrics."""
    console = console or Console(stderr=True)
    xp = backend.xp
    wall0 = time.perf_counter()
    tr, te = DeviceData(backend, train_split, cfg.limit), DeviceData(backend, test_split)
    net = MLP(backend, (tr.X.shape[1], *cfg.hidden, NUM_CLASSES), seed=cfg.seed)
    opt = make_optimizer(cfg.optimizer, backend, net.params, cfg.momentum)
    B = tr.m if cfg.batch_size == "full" else min(cfg.batch_size, tr.m)
    steps = math.ceil(tr.m / B)
    total_steps = cfg.epochs * steps
    log_every = max(1, cfg.epochs // 20)
    metrics: dict[str, Any] = {
        "config": cfg.as_dict(), "dataset": dataset, "device": backend.describe(), "versions": versions(backend),
        "train_samples": tr.m, "test_samples": te.m, "steps_per_epoch": steps, "history": [],
    }
    meta = {"dataset": dataset}
    console.print(f"training {'-'.join(map(str, net.sizes))} on {tr.m} {dataset} samples, "
                  f"{cfg.epochs} epochs x {steps} steps of batch {B}, {cfg.optimizer} lr {cfg.lr:g} "
                  f"({cfg.schedule}), device {metrics['device']}")

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=console, transient=False)
    with bar:
        epoch_task = bar.add_task("epoch", total=cfg.epochs, stats="")
        batch_task = bar.add_task("batch", total=steps, stats="", visible=steps >= LONG_EPOCH_STEPS)
        batch_tick = max(1, steps // 20)
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            perm = None if steps == 1 else backend.permutation(tr.m, (cfg.seed, epoch))
            loss_sum = xp.zeros((), dtype=backend.dtype)
            correct = xp.zeros((), dtype=xp.int64)
            bar.reset(batch_task, total=steps)
            for s in range(steps):
                if perm is None:
                    X, Y, y = tr.X, tr.Y, tr.y
                else:
                    idx = perm[s * B:(s + 1) * B]
                    X, Y, y = tr.X[idx], tr.Y[idx], tr.y[idx]
                cache = net.forward(X)
                AL = cache[f"A{net.L}"]
                loss_sum += net.loss(AL, Y) * Y.shape[0]
                correct += (AL.argmax(axis=1) == y).sum()
                grads = net.backward(cache, Y)
                opt.step(net.params, grads, learning_rate(cfg.lr, cfg.schedule, (epoch - 1) * steps + s, total_steps))
                if (s + 1) % batch_tick == 0:
                    bar.update(batch_task, completed=s + 1)
            test_loss, test_acc = evaluate(net, te)
            # The one device -> host read of the epoch.
            train_loss, train_acc, test_loss, test_acc = backend.to_numpy(
                xp.stack([loss_sum / tr.m, correct / tr.m, test_loss, test_acc]).astype(xp.float64)).tolist()
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss,
                   "test_accuracy": test_acc, "seconds": time.perf_counter() - t0,
                   "lr": learning_rate(cfg.lr, cfg.schedule, epoch * steps - 1, total_steps)}
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                metrics.update(status="diverged", train_seconds=sum(r["seconds"] for r in metrics["history"]))
                write_json(out / "metrics.json", metrics)
                kept = "the last good model.npz is kept" if (out / "model.npz").exists() else "no model was saved"
                raise GpunetError(f"loss became {train_loss if not math.isfinite(train_loss) else test_loss} at "
                                  f"epoch {epoch}; lower the learning rate (e.g. --lr {cfg.lr / 10:g}); {kept}")
            metrics["history"].append(row)
            stats = f"loss {train_loss:.4f}  test acc {100 * test_acc:.2f}%"
            bar.update(epoch_task, advance=1, stats=stats)
            bar.update(batch_task, completed=steps)
            if epoch % log_every == 0 or epoch == cfg.epochs:
                bar.console.print(f"epoch {epoch:>3}/{cfg.epochs} | train {train_loss:.4f} {100 * train_acc:.2f}% | "
                                  f"test {test_loss:.4f} {100 * test_acc:.2f}% | {row['seconds']:.2f} s")
                save_model(out / "model.npz", net, meta)

    last = metrics["history"][-1]
    metrics.update(status="completed", test_accuracy=last["test_accuracy"], test_loss=last["test_loss"],
                   train_seconds=sum(r["seconds"] for r in metrics["history"]),
                   wall_seconds=time.perf_counter() - wall0)
    write_json(out / "metrics.json", metrics)
    return metrics
