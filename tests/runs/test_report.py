"""The reporter of a training run: the events the loop tells it (outline, epochs, steps, resumption) match what
the run did, the console reporter draws the outline, the bars and the logged epochs, and `summary` is the line
`gpunet train` ends with."""

from contextlib import contextmanager

import numpy as np

from gpunet.core.backend import get_backend
from gpunet.runs.config import load_config
from gpunet.runs.report import ConsoleReporter, Reporter, summary
from gpunet.runs.store import load_checkpoint
from gpunet.runs.train import train
from helpers import quiet


class Recorder(Reporter):
    """Keeps every event it is told, in order."""

    def __init__(self):
        self.events = []

    def resuming(self, epoch, step):
        self.events.append(("resuming", epoch, step))

    @contextmanager
    def running(self, outline):
        self.events.append(("running", outline))
        yield
        self.events.append(("ran",))

    def epoch_started(self, first):
        self.events.append(("epoch", first))

    def step_done(self, done):
        self.events.append(("step", done))

    def epoch_done(self, row, improved, logged):
        self.events.append(("done", row, improved, logged))


def test_the_reporter_is_told_each_epoch_and_step_of_the_run(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 300, "epochs": 2, "batch_size": 100, "val_size": 1000})
    recorder = Recorder()
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path, recorder)
    (_, outline), *events, last = recorder.events
    assert (outline.sizes, outline.train_samples, outline.val_samples) == ((784, 128, 10), 300, 1000)
    assert (outline.steps, outline.batch, outline.start_epoch, outline.start_step) == (3, 100, 1, 0)
    assert outline.device == metrics["device"] and last == ("ran",)
    epoch = [("epoch", 0), ("step", 1), ("step", 2), ("step", 3)]
    assert [e[:2] for e in events if e[0] != "done"] == epoch + epoch
    done = [e for e in events if e[0] == "done"]
    assert [row for _, row, _, _ in done] == metrics["history"]
    assert all(logged for *_, logged in done)  # 2 epochs: each one is logged
    assert done[0][2]  # the first epoch is always the best so far


def test_a_resumed_run_tells_where_it_resumes(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 300, "epochs": 2, "batch_size": 100, "val_size": 0,
                                 "checkpoint_every": 1})
    train(load_config(overrides={**cfg.as_dict(), "epochs": 1}), get_backend("cpu"), *mnist, tmp_path)
    recorder = Recorder()
    train(cfg, get_backend("cpu"), *mnist, tmp_path, recorder, resume=load_checkpoint(tmp_path / "checkpoint.npz"))
    assert recorder.events[0] == ("resuming", 2, 0)
    assert recorder.events[1][1].start_epoch == 2
    assert [e[0] for e in recorder.events[2:]] == ["epoch", "step", "step", "step", "done", "ran"]


def test_the_console_reporter_draws_the_outline_bars_and_logged_epochs(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 1000, "epochs": 2, "batch_size": 10, "val_size": 1000})
    console = quiet()
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path, ConsoleReporter(console))
    lines = console.file.getvalue().splitlines()
    assert lines[0] == (f"training 784-128-10 on 1000 mnist samples (validation: 1000 held out), 2 epochs x 100 "
                        f"steps of batch 10, momentum lr {cfg.lr:g} (cosine), device {metrics['device']}")
    row = metrics["history"][1]
    assert any(line.startswith(f"epoch   2/2 | train {row['train_loss']:.4f} {100 * row['train_accuracy']:.2f}% | "
                               f"val {row['val_loss']:.4f} {100 * row['val_accuracy']:.2f}%") for line in lines)
    assert any(line.startswith("epoch ") and "2/2" in line and f"val acc {100 * row['val_accuracy']:.2f}%" in line
               for line in lines)  # the epoch bar, with the last epoch's figures
    assert any(line.startswith("batch ") and "100/100" in line for line in lines)  # 100 steps: a batch bar


def test_summary_says_the_test_accuracy_or_how_to_resume(tmp_path):
    done = {"status": "completed", "config": {"epochs": 3}, "best_epoch": 2, "val_samples": 5000,
            "test_accuracy": 0.97321, "train_seconds": 12.34, "wall_seconds": 15.67,
            "threads": {"asked": "auto", "threads": 2, "steps_at": {"1": 3, "2": 97}}}
    assert summary(done, tmp_path, "cpu") == (
        f"test accuracy 97.32% of the kept model (epoch 2, best on validation) after 3 epochs, 12.3 s training "
        f"(15.7 s wall) on cpu, BLAS threads auto: 2 (3% at 1); saved {tmp_path}/")
    assert "(the last epoch; no validation split)" in summary({**done, "val_samples": 0}, tmp_path, "cpu")
    stopped = {"status": "interrupted", "signal": "SIGTERM", "epoch": 1, "step": 4}
    assert summary(stopped, tmp_path, "cpu") == (f"interrupted (SIGTERM) after epoch 1 step 4; checkpoint saved; "
                                                 f"resume with: gpunet train --resume {tmp_path}")


def test_the_reporter_does_not_change_the_run(tmp_path, mnist):
    """The same run, silent and on a console: the same weights and history."""
    cfg = load_config(overrides={"limit": 300, "epochs": 2, "batch_size": 50})
    silent = train(cfg, get_backend("cpu"), *mnist, tmp_path / "silent")
    shown = train(cfg, get_backend("cpu"), *mnist, tmp_path / "shown", ConsoleReporter(quiet()))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in silent["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in shown["history"]]
    with np.load(tmp_path / "silent" / "model.npz") as a, np.load(tmp_path / "shown" / "model.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files if k != "meta")
