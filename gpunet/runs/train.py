"""The training loop: data resident on the device, one host read per epoch, a run directory with checkpoints.

A run directory holds metrics.json, model.npz and checkpoint.npz. model.npz is the kept model: the best epoch
on the validation rows held out of the training set (gpunet.data.validation), or the last epoch with `val_size` 0;
the test set is evaluated once, at the end, for that model. The checkpoint (every `checkpoint_every` epochs, at
the end, and when Ctrl-C or SIGTERM stops the run after its current step) holds the last weights, the optimizer
state, the epoch and step reached, the partial epoch's sums, the history and the best epoch so far with its
weights, so `resume` continues the run exactly: the shuffle of epoch e is drawn from a generator seeded with
(seed, e), so the epoch fixes the RNG.
"""

from __future__ import annotations

import math
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.core.backend import Backend
from gpunet.runs.config import KEYS, Config, batch_rows, check_value, load_config
from gpunet.data.load import DeviceData
from gpunet.data.datasets import NUM_CLASSES, Split, class_names, get_dataset
from gpunet.errors import GpunetError
from gpunet.runs.evaluate import evaluate
from gpunet.runs.report import Outline, Reporter
from gpunet.files import claim_dir, make_dir, write_json
from gpunet.core.model import MLP
from gpunet.core.optim import OPTIMIZER_SLOTS, learning_rate, make_optimizer
from gpunet.core.step import TrainStep
from gpunet.core.threads import blas_threads
from gpunet.runs.store import MAX_PARAMETERS, PIXELS, Checkpoint, load_checkpoint, save_checkpoint, save_model
from gpunet.data.validation import hold_out
from gpunet.version import __version__


def default_run_dir(prefix: str = "") -> Path:
    """runs/<prefix><UTC timestamp>, e.g. runs/20240101-000000 for a run, runs/sweep-20240101-000000 for a sweep."""
    return Path("runs") / (prefix + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))


def refuse_existing_run(out: Path) -> None:
    """GpunetError when `out` already holds a run, so nothing saved is overwritten by a fresh one."""
    if (Path(out) / "metrics.json").exists() or (Path(out) / "model.npz").exists():
        raise GpunetError(f"{out} already holds a run; choose another --out or remove it")


class StopSignals:
    """Context that turns the first Ctrl-C (SIGINT) or SIGTERM into a request to stop: it sets `requested` and
    `signal` (the signal's name), and the loop checkpoints after its current step and returns; a second one
    raises KeyboardInterrupt at once. Only the main thread can take signals; elsewhere a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "StopSignals":
        self.requested = False
        self.signal = ""
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in self.SIGNALS}
        return self

    def handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for s, previous in self.previous.items():
            signal.signal(s, previous)


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable on Linux), None where it cannot tell."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_size(cfg: Config, dataset: str) -> None:
    """Refuse, before any data is loaded, a net over MAX_PARAMETERS or a run that would need more memory than
    the machine has: parameters with their gradients, optimizer state and scratch, one batch's activations
    forward and backward, the dataset on the host and as features (the estimate is of host memory)."""
    sizes = [PIXELS, *cfg.hidden, NUM_CLASSES]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    if params > MAX_PARAMETERS:
        raise GpunetError(f"--hidden {','.join(map(str, cfg.hidden))} makes a net of {params:,} parameters, over "
                          f"the limit of {MAX_PARAMETERS:,}; choose smaller hidden widths")
    train_file, _, test_file, _ = get_dataset(dataset).files
    n_train, n_test = ((f.size - 16) // PIXELS if f.size else 60_000 for f in (train_file, test_file))
    m = n_train if cfg.limit == 0 else min(cfg.limit, n_train)
    batch = batch_rows(cfg.batch_size, m)
    item = np.dtype(cfg.dtype).itemsize
    need = (item * params * (3 + len(OPTIMIZER_SLOTS[cfg.optimizer]))  # weights, gradients, scratch, state
            + item * 4 * max(batch, n_test) * sum(sizes)  # Z, A, dZ, dA of a batch (or of the test set)
            + (n_train + n_test) * PIXELS * (1 + 4)  # uint8 images and float32 features on the host
            + item * (m + n_test) * (PIXELS + NUM_CLASSES))  # features and one-hot targets on the device
    free = available_memory()
    if free is not None and need > free:
        raise GpunetError(f"this run needs about {need / 1e9:.1f} GB of memory and {free / 1e9:.1f} GB is "
                          f"available; try a smaller --hidden or --batch-size, a --limit, or --dtype float32")


def resume_config(run_dir: Path, overrides: dict[str, Any]) -> tuple[Config, Checkpoint]:
    """The config and checkpoint to continue `run_dir` with. The run's config is kept: an override must equal
    it, except `epochs`, which may be raised to train further (never below the epochs already done), and
    `checkpoint_every`, which does not change the result."""
    path = Path(run_dir) / "checkpoint.npz"
    if not path.exists():
        raise GpunetError(f"{path}: no checkpoint to resume from; is {run_dir} a gpunet run directory?")
    ckpt = load_checkpoint(path)
    values = {k: check_value(str(path), k, v) for k, v in ckpt.meta["config"].items()}
    for key, value in overrides.items():
        if value is None or key not in KEYS:
            continue
        value = check_value("command line", key, value)
        if key == "epochs":
            if value < ckpt.meta["epoch"] + (ckpt.meta["step"] > 0):
                raise GpunetError(f"--epochs {value}: {run_dir} has already trained {ckpt.meta['epoch']} epochs")
        elif value != values[key] and key != "checkpoint_every":
            raise GpunetError(f"--{key.replace('_', '-')} {value} differs from the run's {key} = {values[key]}; "
                              "a resumed run keeps its config (only --epochs may be raised); "
                              "start a new run with another --out to change it")
        values[key] = value
    cfg = Config(**values)
    if ckpt.meta["epoch"] >= cfg.epochs:
        raise GpunetError(f"{run_dir} has completed all {cfg.epochs} epochs; pass a larger --epochs to train further")
    return cfg, ckpt


@dataclass
class Plan:
    """What `gpunet train` will do, settled before any data is loaded or any directory made."""

    cfg: Config
    run_dir: Path
    dataset: str
    resume: Checkpoint | None = None  # the checkpoint to continue (the run directory exists already)
    notes: list[str] = field(default_factory=list)  # lines worth telling the user before the run starts


def plan_run(config: str | Path | None, overrides: dict[str, Any], out: Path | None = None, resume: Path | None = None,
             dataset: str | None = None) -> Plan:
    """A fresh run from `config` with command-line `overrides` into `out` (default runs/<UTC time>), or the
    continuation of the run in `resume` (its own config, directory and dataset; only `epochs` may be raised)."""
    if resume is None:
        plan = Plan(load_config(config, overrides), Path(out) if out is not None else default_run_dir(),
                    dataset or "mnist")
        check_size(plan.cfg, plan.dataset)
        return plan
    if config is not None or out is not None:
        raise GpunetError("--resume continues a run with its own config and directory; drop --config and --out")
    cfg, ckpt = resume_config(resume, overrides)
    plan = Plan(cfg, Path(resume), dataset or ckpt.meta["dataset"], ckpt)
    check_size(plan.cfg, plan.dataset)
    if cfg.epochs != ckpt.meta["config"]["epochs"] and cfg.schedule != "constant":
        plan.notes.append(f"note: the {cfg.schedule} schedule now spans {cfg.epochs} epochs, so this run will not "
                          f"match a fresh {cfg.epochs}-epoch run")
    return plan


def run_plan(plan: Plan, backend: Backend, train_split: Split, test_split: Split,
             reporter: Reporter | None = None, threads: int | str = "auto") -> dict[str, Any]:
    """Train the plan in its run directory, which this process holds alone meanwhile (another run into it, fresh or
    resumed, is refused at once); a fresh run never goes into a directory that holds a run, and a resumed one
    only from the checkpoint it was planned with (not one another process has saved since)."""
    with claim_dir(plan.run_dir, "run directory"):
        if plan.resume is None:
            refuse_existing_run(plan.run_dir)
        elif progress(load_checkpoint(plan.run_dir / "checkpoint.npz")) != progress(plan.resume):
            raise GpunetError(f"{plan.run_dir}: its checkpoint changed since this resume began (another run "
                              "continued it); run the command again to resume from the new one")
        return train(plan.cfg, backend, train_split, test_split, plan.run_dir, reporter, dataset=plan.dataset,
                     resume=plan.resume, classes=class_names(plan.dataset), threads=threads)


def progress(ckpt: Checkpoint) -> tuple[int, int]:
    """How far a checkpoint's run is: (epochs done, steps done in the next)."""
    return ckpt.meta["epoch"], ckpt.meta["step"]


@dataclass
class Kept:
    """The model that model.npz holds: the best epoch on validation so far (higher accuracy, then lower loss;
    the earlier epoch on a tie), or, without a validation split, the last epoch."""

    epoch: int = 0
    val_accuracy: float | None = None
    val_loss: float | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)  # host copy of its weights (with validation only)

    def beaten_by(self, row: dict[str, Any]) -> bool:
        if "val_accuracy" not in row:
            return True
        return self.epoch == 0 or (row["val_accuracy"], -row["val_loss"]) > (self.val_accuracy, -self.val_loss)

    def meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss}

    def header(self) -> dict[str, Any]:
        """What model.npz's header and metrics.json say of the kept model."""
        if self.val_accuracy is None:
            return {"epochs": self.epoch, "best_epoch": self.epoch, "kept": "last epoch (no validation split)"}
        return {"epochs": self.epoch, "best_epoch": self.epoch, "kept": "best epoch on validation",
                "val_accuracy": self.val_accuracy, "val_loss": self.val_loss}


def checkpoint(path: Path, net: MLP, opt: Any, metrics: dict[str, Any], kept: Kept, epoch: int, step: int,
               sums: dict[str, np.ndarray], seconds: float) -> None:
    """Save the state after `step` steps of epoch `epoch` + 1 (step 0: at the end of epoch `epoch`)."""
    meta = {key: metrics[key] for key in ("config", "dataset", "train_samples", "validation", "history")}
    save_checkpoint(path, Checkpoint(net.state_dict(), opt.state_dict(), sums, {
        **meta, "epoch": epoch, "step": step, "epoch_seconds": seconds, "best": kept.meta(),
        "rng": {"shuffle_seed": [metrics["config"]["seed"], epoch + 1]},  # the next shuffle's seed: its full state
    }, kept.params))


def restore(resume: Checkpoint, opt: Any, metrics: dict[str, Any]) -> tuple[Kept, int, int]:
    """Load `resume`'s optimizer state and history (into `opt` and `metrics`) after checking that it was trained
    on the same rows; the kept model so far, and the epoch and step to continue at."""
    def rows(m: int, name: str, validation: dict[str, Any] | None) -> str:
        return f"{m} {name} samples " + (f"(validation rows {validation['indices_sha256'][:12]})"
                                         if validation else "(no validation split)")

    had = rows(resume.meta["train_samples"], resume.meta["dataset"], resume.meta.get("validation"))
    have = rows(metrics["train_samples"], metrics["dataset"], metrics["validation"])
    if had != have:
        raise GpunetError(f"the checkpoint was trained on {had}, not {have}; cannot resume")
    try:
        opt.load_state_dict(resume.optimizer)
    except ValueError as e:
        raise GpunetError(f"damaged checkpoint: {e}") from None
    metrics["history"] = resume.meta["history"]
    return Kept(**resume.meta.get("best", {}), params=resume.best), resume.meta["epoch"] + 1, resume.meta["step"]


def train_seconds(metrics: dict[str, Any]) -> float:
    """Seconds spent training: the sum over the epochs of the history."""
    return sum(r["seconds"] for r in metrics["history"])


def diverged(out: Path, metrics: dict[str, Any], kept: Kept, what: str) -> GpunetError:
    """Record in `out`/metrics.json that the run diverged (`what`: the loss and epoch); the error to stop with."""
    metrics.update(status="diverged", train_seconds=train_seconds(metrics))
    write_json(out / "metrics.json", metrics)
    kept_line = (f"the last good model.npz is kept (epoch {kept.epoch})" if (out / "model.npz").exists()
                 else "no model was saved")
    return GpunetError(f"{what}; lower the learning rate (e.g. --lr {metrics['config']['lr'] / 10:g}); {kept_line}")


def score_test_set(net: MLP, test_split: Split) -> dict[str, Any]:
    """The test set's size, loss and accuracy for `net`, in one device read."""
    te = DeviceData(net.backend, test_split)
    scores = evaluate(net, te)
    test_loss, test_acc = net.backend.to_floats([scores.loss, scores.accuracy])
    return {"test_samples": te.m, "test_loss": test_loss, "test_accuracy": test_acc}


def train(cfg: Config, backend: Backend, train_split: Split, test_split: Split | None, out: Path,
          reporter: Reporter | None = None, dataset: str = "mnist", resume: Checkpoint | None = None,
          classes: list[str] | None = None, threads: int | str = "auto") -> dict[str, Any]:
    """Train per `cfg` (continuing `resume` when given) and write `out`/metrics.json, model.npz (the kept model:
    the best epoch on the `val_size` rows held out of `train_split`, or the last epoch without them) and
    checkpoint.npz (the last epoch). The test set is evaluated once, at the end, for the kept model; with
    `test_split` None it is never touched (a sweep). `reporter` is told how the run goes (None: nothing is
    shown). `threads`: the BLAS threads of its steps and evaluations, 'auto' or a count (gpunet.core.threads);
    what was chosen goes into the metrics as "threads". Returns the metrics; their status is "interrupted" when
    Ctrl-C or SIGTERM stopped the run."""
    reporter = reporter or Reporter()
    wall0 = time.perf_counter()
    holdout = hold_out(train_split, cfg.val_size) if cfg.val_size else None
    tr = DeviceData(backend, train_split if holdout is None else holdout.train, cfg.limit)
    va = None if holdout is None else DeviceData(backend, holdout.val)
    if resume is None:
        net = MLP(backend, (tr.X.shape[1], *cfg.hidden, NUM_CLASSES), seed=cfg.seed)
    else:
        net = MLP.from_state_dict(backend, resume.params)
    opt = make_optimizer(cfg.optimizer, backend, net.params, cfg.momentum)
    step = TrainStep(net, opt, tr.X, tr.Y, tr.y)  # reused arrays; a CUDA graph with GPUNET_CUDA_GRAPH=1
    B = batch_rows(cfg.batch_size, tr.m)
    steps = math.ceil(tr.m / B)
    blas = blas_threads(threads, backend, B, net.sizes)
    total_steps = cfg.epochs * steps
    log_every = max(1, cfg.epochs // 20)
    metrics: dict[str, Any] = {
        "config": cfg.as_dict(), "dataset": dataset, "device": backend.describe(),
        "versions": {"gpunet": __version__, "python": platform.python_version(), **backend.versions()},
        "train_samples": tr.m, "val_samples": 0 if va is None else va.m,
        "validation": None if holdout is None else holdout.describe(), "steps_per_epoch": steps, "history": [],
        "threads": blas.report,  # live: updated by every step
    }
    meta = {"dataset": dataset, "classes": classes or class_names(dataset), "device": backend.name}
    kept, start_epoch, start_step = Kept(), 1, 0
    if resume is not None:
        kept, start_epoch, start_step = restore(resume, opt, metrics)
        reporter.resuming(start_epoch, start_step)
    make_dir(out, "run directory")  # only now: a run refused while setting up leaves no directory behind
    outline = Outline(cfg, net.sizes, dataset, tr.m, metrics["val_samples"], steps, B, metrics["device"],
                      start_epoch, start_step)
    # A diverging run overflows; the check after each epoch reports it, so NumPy's warnings would only be noise.
    with reporter.running(outline), StopSignals() as stop, np.errstate(over="ignore", invalid="ignore"), blas:
        for epoch in range(start_epoch, cfg.epochs + 1):
            first = start_step if epoch == start_epoch else 0
            t0 = time.perf_counter() - (resume.meta["epoch_seconds"] if first else 0.0)
            loss_sum, correct = step.zero_sums()  # the step's device accumulators
            if first:  # the interrupted epoch's sums so far
                loss_sum += backend.asarray(resume.sums["loss_sum"])
                correct += backend.asarray(resume.sums["correct"], dtype=backend.xp.int64)
            reporter.epoch_started(first)
            for s, idx in step.batches(B, (cfg.seed, epoch), first):
                with blas.step():
                    step(idx, learning_rate(cfg.lr, cfg.schedule, (epoch - 1) * steps + s, total_steps))
                reporter.step_done(s + 1)
                if stop.requested:
                    sums = {"loss_sum": backend.to_numpy(loss_sum), "correct": backend.to_numpy(correct)}
                    checkpoint(out / "checkpoint.npz", net, opt, metrics, kept, epoch - 1, s + 1, sums,
                               time.perf_counter() - t0)
                    metrics.update(status="interrupted", signal=stop.signal, epoch=epoch - 1, step=s + 1,
                                   train_seconds=train_seconds(metrics))
                    write_json(out / "metrics.json", metrics)
                    return metrics
            stats = [loss_sum / tr.m, correct / tr.m]
            if va is not None:
                scores = evaluate(net, va)
                stats += [scores.loss, scores.accuracy]
            values = backend.to_floats(stats)  # the one device -> host read of the epoch
            row = {"epoch": epoch, "train_loss": values[0], "train_accuracy": values[1]}
            if va is not None:
                row.update(val_loss=values[2], val_accuracy=values[3])
            row.update(seconds=time.perf_counter() - t0,
                       lr=learning_rate(cfg.lr, cfg.schedule, epoch * steps - 1, total_steps))
            bad = next((v for v in values if not math.isfinite(v)), None)
            if bad is not None:
                raise diverged(out, metrics, kept, f"loss became {bad} at epoch {epoch}")
            metrics["history"].append(row)
            improved = kept.beaten_by(row)
            if improved:
                kept = Kept(epoch, row.get("val_accuracy"), row.get("val_loss"),
                            {} if va is None else net.state_dict())
            logged = epoch % log_every == 0 or epoch == cfg.epochs
            reporter.epoch_done(row, improved, logged)
            if improved and (va is not None or logged):
                save_model(out / "model.npz", net, {**meta, **kept.header()})
            if epoch == cfg.epochs or (cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0):
                checkpoint(out / "checkpoint.npz", net, opt, metrics, kept, epoch, 0, {}, 0.0)

    metrics.update(status="completed", **{k: v for k, v in kept.header().items() if k != "epochs"},
                   train_seconds=train_seconds(metrics))
    if test_split is not None:  # the test set, read once, for the kept model
        final = net if va is None else MLP.from_state_dict(backend, kept.params)
        with blas:
            metrics.update(score_test_set(final, test_split))
        save_model(out / "model.npz", final, {**meta, **kept.header(), "test_accuracy": metrics["test_accuracy"],
                                              "test_loss": metrics["test_loss"]})
    metrics["wall_seconds"] = time.perf_counter() - wall0
    write_json(out / "metrics.json", metrics)
    return metrics
