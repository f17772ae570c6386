"""What a training run tells as it goes, apart from the loop (gpunet.runs.train) that does the work.

`Reporter` says nothing: the loop runs silently, as it does on a worker with no terminal. `ConsoleReporter` is
what `gpunet train` shows on a terminal: the run's outline, a bar over epochs (and one over batches when an
epoch is long), a line per logged epoch; `summary` is the line the command ends with.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gpunet.core.threads import threads_label
from gpunet.runs.config import Config

LONG_EPOCH_STEPS = 50  # show a second bar over batches when an epoch has at least this many steps


@dataclass
class Outline:
    """What a run is about to do, for its reporter."""

    cfg: Config
    sizes: tuple[int, ...]  # the layer widths, input to output
    dataset: str
    train_samples: int
    val_samples: int  # 0 without a validation split
    steps: int  # steps per epoch
    batch: int  # rows per step
    device: str  # the backend's description
    start_epoch: int = 1  # the first epoch this run trains (later than 1 when resumed)
    start_step: int = 0  # the step of `start_epoch` it starts at


class Reporter:
    """The events of a training run, each a no-op here: the silent reporter."""

    def resuming(self, epoch: int, step: int) -> None:
        """The run continues a checkpoint at `step` of `epoch`."""

    @contextmanager
    def running(self, outline: Outline) -> Iterator[None]:
        """The context around the run's epochs."""
        yield

    def epoch_started(self, first: int) -> None:
        """An epoch starts at step `first` (above 0 only in the resumed epoch)."""

    def step_done(self, done: int) -> None:
        """`done` steps of the epoch are done."""

    def epoch_done(self, row: dict[str, Any], improved: bool, logged: bool) -> None:
        """An epoch ended with its history `row`; `improved`: it is the kept model now; `logged`: one of the
        epochs the run's log shows (about 20 in all, and the last)."""


class ConsoleReporter(Reporter):
    """The run on a rich console (stderr by default): its outline, progress bars and the logged epochs."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def resuming(self, epoch: int, step: int) -> None:
        self.console.print(f"resuming at epoch {epoch}" + (f", step {step}" if step else ""))

    @contextmanager
    def running(self, outline: Outline) -> Iterator[None]:
        self.outline = o = outline
        cfg = o.cfg
        self.console.print(f"training {'-'.join(map(str, o.sizes))} on {o.train_samples} {o.dataset} samples"
                           + ("" if not o.val_samples else f" (validation: {o.val_samples} held out)")
                           + f", {cfg.epochs} epochs x {o.steps} steps of batch {o.batch}, {cfg.optimizer} lr "
                           f"{cfg.lr:g} ({cfg.schedule}), device {o.device}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console,
                      transient=False) as self.bar:
            self.epoch_task = self.bar.add_task("epoch", total=cfg.epochs, completed=o.start_epoch - 1, stats="")
            self.batch_task = self.bar.add_task("batch", total=o.steps, stats="", visible=o.steps >= LONG_EPOCH_STEPS)
            self.batch_tick = max(1, o.steps // 20)
            yield

    def epoch_started(self, first: int) -> None:
        self.bar.reset(self.batch_task, total=self.outline.steps, completed=first)

    def step_done(self, done: int) -> None:
        if done % self.batch_tick == 0:
            self.bar.update(self.batch_task, completed=done)

    def epoch_done(self, row: dict[str, Any], improved: bool, logged: bool) -> None:
        val = "val_accuracy" in row
        held = f"  val acc {100 * row['val_accuracy']:.2f}%" if val else ""
        self.bar.update(self.epoch_task, advance=1, stats=f"loss {row['train_loss']:.4f}{held}")
        self.bar.update(self.batch_task, completed=self.outline.steps)
        if logged:
            held = (f"val {row['val_loss']:.4f} {100 * row['val_accuracy']:.2f}%{' *' if improved else '  '} | "
                    if val else "")
            self.bar.console.print(f"epoch {row['epoch']:>3}/{self.outline.cfg.epochs} | train "
                                   f"{row['train_loss']:.4f} {100 * row['train_accuracy']:.2f}% | {held}"
                                   f"{row['seconds']:.2f} s")


def summary(metrics: dict[str, Any], run_dir: Path, device: str) -> str:
    """The line a run ends with: how to resume an interrupted run, or the kept model's test accuracy."""
    if metrics["status"] == "interrupted":
        return (f"interrupted ({metrics['signal']}) after epoch {metrics['epoch']} step {metrics['step']}; "
                f"checkpoint saved; resume with: gpunet train --resume {run_dir}")
    kept = (f"epoch {metrics['best_epoch']}, best on validation" if metrics["val_samples"] else
            "the last epoch; no validation split")
    return (f"test accuracy {100 * metrics['test_accuracy']:.2f}% of the kept model ({kept}) after "
            f"{metrics['config']['epochs']} epochs, "
            f"{metrics['train_seconds']:.1f} s training ({metrics['wall_seconds']:.1f} s wall) on {device}, "
            f"BLAS threads {threads_label(metrics['threads'])}; saved {run_dir}/")
