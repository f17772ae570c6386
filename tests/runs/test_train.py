"""Training end to end on a subset: it learns, runs are reproducible, the run directory holds what it promises,
an existing run is never overwritten, and running out of memory or diverging stops with one clean line that
keeps the last good model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunet.runs import train as train_module
from gpunet.core.backend import get_backend
from gpunet.runs.config import load_config
from gpunet.runs.store import load_checkpoint, load_model
from gpunet.errors import GpunetError
from gpunet.files import claim_dir
from gpunet.runs.train import plan_run, run_plan, train
from helpers import assert_clean_error, cli


def test_a_few_epochs_on_2000_samples_learn(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 2000, "epochs": 4, "batch_size": 64})
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path)
    assert metrics["train_samples"] == 2000 and metrics["test_samples"] == 10000
    assert metrics["test_accuracy"] > 0.85  # held out: the 10,000 test images
    history = metrics["history"]
    assert len(history) == 4 and history[-1]["train_loss"] < history[0]["train_loss"]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"] and saved["status"] == "completed"
    assert saved["config"]["limit"] == 2000 and saved["versions"]["numpy"] == np.__version__
    net, header = load_model(tmp_path / "model.npz", get_backend("cpu"))
    assert header["sizes"] == [784, 128, 10] and header["dataset"] == "mnist"
    # The saved weights reproduce the reported test accuracy.
    test = mnist[1]
    X = test.images.reshape(-1, 784).astype(np.float32) / 255
    assert (net.predict(X) == test.labels).mean() == pytest.approx(metrics["test_accuracy"], abs=1e-9)


def test_full_batch_gd_and_a_deeper_net(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 1000, "epochs": 3, "batch_size": "full", "optimizer": "gd",
                                 "hidden": [32, 16], "schedule": "constant"})
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path)
    assert metrics["steps_per_epoch"] == 1
    assert load_model(tmp_path / "model.npz", get_backend("cpu"))[1]["sizes"] == [784, 32, 16, 10]


def test_runs_are_reproducible(tmp_path, mnist):
    """Bit for bit at a fixed count of BLAS threads; with auto (whose count follows the machine's load, and
    OpenBLAS's sums depend on it) in the last bits only."""
    cfg = load_config(overrides={"limit": 500, "epochs": 2, "batch_size": 50})
    a = train(cfg, get_backend("cpu"), *mnist, tmp_path / "a", threads=1)
    b = train(cfg, get_backend("cpu"), *mnist, tmp_path / "b", threads=1)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert a["threads"]["policy"] == "asked" and a["threads"]["steps_at"] == {"1": 20}
    auto = train(cfg, get_backend("cpu"), *mnist, tmp_path / "auto")
    assert auto["threads"]["asked"] == "auto" and sum(auto["threads"]["steps_at"].values()) == 20
    assert [r["train_loss"] for r in auto["history"]] == pytest.approx([r["train_loss"] for r in a["history"]],
                                                                       rel=1e-5)


def test_train_writes_metrics_and_model(trained):
    """The shared run: `gpunet train --device cpu --epochs 3 --limit 10000`."""
    out, result = trained
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 3 and metrics["train_samples"] == 10000
    assert metrics["device"].startswith("cpu") and 0 < metrics["test_accuracy"] <= 1
    assert (out / "model.npz").stat().st_size > 100_000
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # The BLAS threads chosen (auto by default), in metrics.json and at the end of the summary line.
    threads = metrics["threads"]
    assert threads["asked"] == "auto" and sum(threads["steps_at"].values()) == 3 * metrics["steps_per_epoch"]
    assert str(threads["threads"]) in threads["steps_at"] and "BLAS threads auto: " in result.stdout


def test_bad_threads_is_one_clean_line_before_anything_is_made(tmp_path):
    assert_clean_error(cli("train", "--device", "cpu", "--threads", "some", "--out", tmp_path / "r"),
                       "--threads 'some': give a number of threads (1 to 1,024) or auto")
    assert not (tmp_path / "r").exists()


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    result = cli("train", "--device", "cpu", "--epochs", "1", "--limit", "100", "--out", tmp_path)
    assert_clean_error(result, "already holds a run")
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_out_of_memory_is_one_clean_line(tmp_path):
    assert_clean_error(cli("train", "--device", "cpu", "--hidden", "10000000000", "--out", tmp_path / "r"),
                       "over the limit of 50,000,000")  # refused from its size, before the data loads


def test_diverging_run_stops_with_a_hint(tmp_path):
    out = tmp_path / "r"
    result = cli("train", "--device", "cpu", "--limit", "500", "--epochs", "3", "--lr", "1e30", "--out", out)
    assert_clean_error(result, "at epoch 1", "lower the learning rate")
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_divergence_keeps_the_last_good_model_and_checkpoint(tmp_path, monkeypatch):
    """Epoch 1 trains normally; from epoch 2 on the learning rate explodes (4 steps per epoch)."""
    monkeypatch.setattr(train_module, "learning_rate", lambda base, schedule, step, total: base if step < 4 else 1e30)
    out = tmp_path / "r"
    result = cli("train", "--device", "cpu", "--limit", "500", "--epochs", "3", "--checkpoint-every", "1",
                 "--out", out)
    assert_clean_error(result, "at epoch 2", "the last good model.npz is kept")
    net, header = load_model(out / "model.npz", get_backend("cpu"))
    assert header["epochs"] == 1 and all(np.isfinite(v).all() for v in net.state_dict().values())
    assert load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 1
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_the_loop_runs_silently(tmp_path, mnist, capfd):
    """Without a reporter (a worker with no terminal) a run writes nothing to stdout or stderr, and still writes
    its run directory."""
    cfg = load_config(overrides={"limit": 300, "epochs": 2, "batch_size": 10})
    capfd.readouterr()
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path)
    assert capfd.readouterr() == ("", "")
    assert metrics["status"] == "completed" and len(metrics["history"]) == 2
    assert {"metrics.json", "model.npz", "checkpoint.npz"} <= {p.name for p in tmp_path.iterdir()}


# A run directory held by one run at a time -------------------------------------------------------------------------

SMALL = ("--device", "cpu", "--epochs", "2", "--limit", "300", "--val-size", "100", "--batch-size", "100",
         "--no-plots")


@pytest.fixture
def loaded_once(monkeypatch, mnist):
    """The CLI's dataset loads hand out the session's MNIST."""
    from gpunet.data import load as data_module

    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: mnist)


@pytest.mark.parametrize("args", [(), ("--epochs", "3")], ids=["fresh", "more-epochs"])
def test_a_run_directory_in_use_is_refused_to_another_run(tmp_path, loaded_once, args):
    out = tmp_path / "run"
    with claim_dir(out):  # as another process would hold it: an flock on the directory from another open
        assert_clean_error(cli("train", *SMALL, *args, "--out", out), "another gpunet process is using")
    assert list(out.iterdir()) == []


def test_a_run_in_progress_cannot_be_resumed_at_the_same_time(tmp_path, loaded_once):
    out = tmp_path / "run"
    assert cli("train", *SMALL, "--out", out).exit_code == 0
    before = (out / "checkpoint.npz").read_bytes()
    with claim_dir(out):
        assert_clean_error(cli("train", "--resume", out, "--epochs", "3", "--no-plots"),
                           "another gpunet process is using")
    assert (out / "checkpoint.npz").read_bytes() == before


def test_a_resume_planned_before_another_resume_finished_is_refused(tmp_path, loaded_once, mnist):
    out = tmp_path / "run"
    assert cli("train", *SMALL, "--out", out).exit_code == 0
    plan = plan_run(None, {"epochs": 4}, resume=out)  # planned from the 2-epoch checkpoint...
    assert cli("train", "--resume", out, "--epochs", "3", "--no-plots").exit_code == 0  # ...which moves on
    with pytest.raises(GpunetError, match="its checkpoint changed since this resume began"):
        run_plan(plan, get_backend("cpu"), *mnist)
    assert load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 3


def test_two_trainings_into_one_directory_at_once_leave_one_run_and_one_error(tmp_path):
    """Two real processes started together: one trains and saves, the other stops with one line."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "gpunet", "train", *SMALL, "--seed", "{}", "--out", str(out)]
    procs = [subprocess.Popen([a.format(seed) for a in command], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    (winner,), (loser,) = [[seed for seed, (code, _) in zip((1, 2), results) if code == c] for c in (0, 2)]
    errors = [line for line in results[loser - 1][1].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and ("another gpunet process is using" in errors[0] or "already holds a run" in errors[0])
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == winner
    assert load_checkpoint(out / "checkpoint.npz").meta["config"]["seed"] == winner
