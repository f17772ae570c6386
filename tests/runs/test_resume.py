"""Checkpoints and resume: an interrupted run resumed equals the uninterrupted one bit for bit (at a fixed count
of BLAS threads: OpenBLAS's sums depend on it), more epochs on resume, conflicting requests refused, and Ctrl-C
(first asks to stop, second aborts)."""

import json
import signal

import numpy as np
import pytest

from gpunet.runs import train as train_module
from gpunet.runs.store import load_checkpoint
from gpunet.runs.train import StopSignals
from helpers import cli


def weights(run_dir):
    with np.load(run_dir / "model.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def history(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def interrupt_at_call(monkeypatch, n):
    """Send a real SIGINT (Ctrl-C) during the n-th learning-rate lookup, i.e. inside a training step."""
    calls = []
    real = train_module.learning_rate

    def learning_rate(*args):
        calls.append(1)
        if len(calls) == n:
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(train_module, "learning_rate", learning_rate)


def test_interrupted_and_resumed_run_matches_the_uninterrupted_one_bit_for_bit(backend, tmp_path, monkeypatch):
    """On every device (cuda through the CLI too), and, resumed on the other device, the same batches."""
    device = backend.name
    common = ("train", "--device", device, "--epochs", 3, "--limit", 1000, "--batch-size", 100, "--no-plots",
              "--threads", 1)
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli(*common, "--out", whole).exit_code == 0

    real = train_module.learning_rate
    interrupt_at_call(monkeypatch, 15)  # 10 steps per epoch (+1 lookup for the log): epoch 2, step 4
    stopped = cli(*common, "--out", split)
    assert stopped.exit_code == 130, stopped.output
    assert f"gpunet train --resume {split}" in stopped.output
    ckpt = load_checkpoint(split / "checkpoint.npz")
    assert (ckpt.meta["epoch"], ckpt.meta["step"]) == (1, 4)
    assert json.loads((split / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(train_module, "learning_rate", real)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("checkpoint.npz", "metrics.json", "model.npz"):
        (other / name).write_bytes((split / name).read_bytes())

    resumed = cli("train", "--device", device, "--resume", split, "--no-plots", "--threads", 1)
    assert resumed.exit_code == 0, resumed.output
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert history(whole) == history(split)
    opt_a = load_checkpoint(whole / "checkpoint.npz").optimizer
    opt_b = load_checkpoint(split / "checkpoint.npz").optimizer
    for k in opt_a:
        assert np.array_equal(opt_a[k], opt_b[k]), k

    on_other = cli("train", "--device", "cpu" if device == "cuda" else "cuda", "--resume", other, "--no-plots")
    if device == "cpu" and on_other.exit_code == 2:  # no cuda here: the cpu run is resumed on cpu above
        return
    assert on_other.exit_code == 0, on_other.output
    c = weights(other)
    for k in a:  # the same batches: only the devices' rounding differs
        np.testing.assert_allclose(c[k], a[k], rtol=1e-4, atol=1e-5)


def test_raising_epochs_on_resume_continues_like_a_longer_run(tmp_path):
    """With a constant learning rate (the seed recipe), 2 epochs + 1 more on resume equal 3 epochs."""
    common = ("train", "--config", "seed", "--device", "cpu", "--limit", 500, "--no-plots", "--threads", 1)
    assert cli(*common, "--epochs", 3, "--out", tmp_path / "three").exit_code == 0
    assert cli(*common, "--epochs", 2, "--out", tmp_path / "two", "--checkpoint-every", 1).exit_code == 0
    result = cli("train", "--device", "cpu", "--resume", tmp_path / "two", "--epochs", 3, "--no-plots", "--threads", 1)
    assert result.exit_code == 0, result.output
    a, b = weights(tmp_path / "three"), weights(tmp_path / "two")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert history(tmp_path / "three") == history(tmp_path / "two")


@pytest.mark.parametrize("args, message", [
    (("--lr", 0.5), "differs from the run's lr"),
    (("--epochs", 1), "has already trained 2 epochs"),
    ((), "completed all 2 epochs"),
    (("--out", "elsewhere"), "drop --config and --out"),
])
def test_resume_refuses_a_conflicting_request(tmp_path, args, message):
    run_dir = tmp_path / "run"
    base = ("train", "--device", "cpu", "--epochs", 2, "--limit", 300, "--no-plots")
    assert cli(*base, "--out", run_dir).exit_code == 0
    before = (run_dir / "checkpoint.npz").read_bytes()
    result = cli("train", "--device", "cpu", "--resume", run_dir, "--no-plots", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert (run_dir / "checkpoint.npz").read_bytes() == before


def test_resume_without_a_checkpoint_is_a_clean_error(tmp_path):
    result = cli("train", "--device", "cpu", "--resume", tmp_path)
    assert result.exit_code == 2
    assert "no checkpoint to resume from" in result.output


def test_first_ctrl_c_asks_to_stop_and_second_aborts():
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN when started in background
    with StopSignals() as ctrl_c:
        assert not ctrl_c.requested
        signal.raise_signal(signal.SIGINT)
        assert ctrl_c.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
