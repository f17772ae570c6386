"""The validation split, the best epoch on it kept, the test set read once at the end (or never)."""

import hashlib
import json
import signal

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.runs import train as train_module
from gpunet.core.backend import get_backend
from gpunet.apps.cli import app
from gpunet.runs.config import load_config
from gpunet.data.load import DeviceData, to_features
from gpunet.errors import GpunetError
from gpunet.runs.evaluate import evaluate
from gpunet.runs.plots import curves
from gpunet.runs.store import load_checkpoint, load_model
from gpunet.runs.train import train
from gpunet.data.validation import class_quota, hold_out

runner = CliRunner()


def weights(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k != "meta"}


# --- the split ------------------------------------------------------------------------------------------------


def test_the_split_is_stratified_seeded_and_disjoint(mnist):
    train_split = mnist[0]
    a, b = hold_out(train_split, 5000), hold_out(train_split, 5000)
    assert np.array_equal(a.indices, b.indices) and a.digest == b.digest  # the same rows every call
    assert a.digest == hashlib.sha256(a.indices.astype("<i8").tobytes()).hexdigest()
    n = len(train_split.labels)
    assert len(a.indices) == 5000 and len(np.unique(a.indices)) == 5000
    train_rows = np.setdiff1d(np.arange(n), a.indices)
    assert len(a.train.labels) == n - 5000  # disjoint, and together all rows
    assert np.array_equal(a.train.images, train_split.images[train_rows])
    assert np.array_equal(a.val.images, train_split.images[a.indices])
    assert np.array_equal(a.val.labels, train_split.labels[a.indices])
    # Stratified: each class holds its share of the 5,000 to within one row.
    share = 5000 * np.bincount(train_split.labels) / n
    assert np.all(np.abs(np.bincount(a.val.labels) - share) < 1)
    assert hold_out(train_split, 4000).digest != a.digest


def test_class_quota_sums_to_the_size():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    assert class_quota(labels, 5).tolist() == [4, 1, 0]  # 3.5, 1, 0.5: ties of remainder go to the first class
    for size in range(1, 10):
        q = class_quota(labels, size)
        assert q.sum() == size and np.all(q <= np.bincount(labels))
        assert np.all(np.abs(q - size * np.bincount(labels) / 10) < 1)


def test_the_held_out_rows_are_the_same_on_every_device(mnist, backend):
    holdout = hold_out(mnist[0], 3000)
    va = DeviceData(backend, holdout.val)
    assert np.array_equal(backend.to_numpy(va.y), mnist[0].labels[holdout.indices].astype(np.int32))
    assert np.array_equal(backend.to_numpy(va.X), to_features(mnist[0].images[holdout.indices]))


@pytest.mark.parametrize("size", [60000, 70000])
def test_a_split_as_large_as_the_training_set_is_refused(mnist, size):
    with pytest.raises(GpunetError, match=f"val_size = {size}: the validation split must be between 1 and 59999"):
        hold_out(mnist[0], size)


@pytest.mark.parametrize("args, fragment", [(["--val-size", "60000"], "val_size = 60000"),
                                            (["--val-size", "-1"], "val_size = -1")])
def test_bad_val_size_is_one_clean_line(tmp_path, args, fragment):
    result = runner.invoke(app, ["train", "--device", "cpu", "--epochs", "1", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and fragment in lines[-1] and result.stderr.count("error: ") == 1
    assert not (tmp_path / "r").exists()  # refused while setting up: no run directory is left behind


# --- training with it -----------------------------------------------------------------------------------------


def test_metrics_record_the_split_and_limit_takes_the_remaining_rows(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 700, "epochs": 1, "val_size": 2000})
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path / "a")
    holdout = hold_out(mnist[0], 2000)
    assert metrics["validation"]["indices_sha256"] == holdout.digest and metrics["validation"]["samples"] == 2000
    assert metrics["train_samples"] == 700 and metrics["val_samples"] == 2000
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert saved["validation"] == metrics["validation"]
    row = saved["history"][0]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy"} <= set(row)
    assert not any(k.startswith("test") for k in row)  # no per-epoch test figures
    # The held-out rows do not depend on limit.
    other = train(load_config(overrides={"limit": 300, "epochs": 1, "val_size": 2000}), get_backend("cpu"), *mnist,
                  tmp_path / "b")
    assert other["validation"] == metrics["validation"]


def lr_that_turns_bad(steps_per_epoch, good_epochs, interrupt_at=None):
    """Normal steps for `good_epochs` epochs, then gradient ascent (the loss climbs, still finite); optionally a
    real SIGINT during the `interrupt_at`-th lookup."""
    calls = []

    def learning_rate(base, schedule, step, total):
        calls.append(1)
        if len(calls) == interrupt_at:
            signal.raise_signal(signal.SIGINT)
        return base if step < good_epochs * steps_per_epoch else -0.5

    return learning_rate


def test_the_best_epoch_on_validation_is_kept_and_the_last_stays_in_the_checkpoint(tmp_path, mnist, monkeypatch):
    monkeypatch.setattr(train_module, "learning_rate", lr_that_turns_bad(10, 2))
    cfg = load_config(overrides={"limit": 1000, "batch_size": 100, "epochs": 4, "val_size": 1000,
                                 "schedule": "constant", "lr": 0.1})
    out = tmp_path / "run"
    metrics = train(cfg, get_backend("cpu"), *mnist, out)
    history = metrics["history"]
    assert history[3]["val_accuracy"] < history[1]["val_accuracy"]  # the constructed case: the end is worse
    best = max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert metrics["best_epoch"] == best["epoch"] <= 2
    assert metrics["val_accuracy"] == best["val_accuracy"] and metrics["val_loss"] == best["val_loss"]
    net, header = load_model(out / "model.npz", get_backend("cpu"))
    assert header["best_epoch"] == header["epochs"] == best["epoch"]
    assert header["test_accuracy"] == metrics["test_accuracy"]
    # model.npz is the best epoch: its validation score is the recorded one, and its test score the reported one.
    val = DeviceData(get_backend("cpu"), hold_out(mnist[0], 1000).val)
    assert float(evaluate(net, val).accuracy) == pytest.approx(best["val_accuracy"], abs=1e-12)
    test = DeviceData(get_backend("cpu"), mnist[1])
    assert float(evaluate(net, test).accuracy) == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    # The checkpoint holds the last epoch, and the best one beside it.
    ckpt = load_checkpoint(out / "checkpoint.npz")
    assert ckpt.meta["epoch"] == 4 and ckpt.meta["best"]["epoch"] == best["epoch"]
    kept = weights(out / "model.npz")
    assert all(np.array_equal(ckpt.best[k], kept[k]) for k in kept)
    assert not all(np.array_equal(ckpt.params[k], kept[k]) for k in kept)


def test_resume_keeps_the_best_epoch_bit_for_bit(tmp_path, mnist, monkeypatch):
    """Interrupted in epoch 3, after the best epoch: the resumed run ends identical to the whole one."""
    cfg = load_config(overrides={"limit": 1000, "batch_size": 100, "epochs": 4, "val_size": 1000,
                                 "schedule": "constant", "lr": 0.1})
    cpu = get_backend("cpu")
    monkeypatch.setattr(train_module, "learning_rate", lr_that_turns_bad(10, 2))
    whole = train(cfg, cpu, *mnist, tmp_path / "whole", threads=1)  # one count: the same sums every run
    monkeypatch.setattr(train_module, "learning_rate", lr_that_turns_bad(10, 2, interrupt_at=27))  # epoch 3, step 5
    stopped = train(cfg, cpu, *mnist, tmp_path / "split", threads=1)
    assert stopped["status"] == "interrupted"
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoint.npz")
    assert ckpt.meta["epoch"] == 2 and ckpt.meta["best"]["epoch"] == whole["best_epoch"] and ckpt.best
    monkeypatch.setattr(train_module, "learning_rate", lr_that_turns_bad(10, 2))
    resumed = train(cfg, cpu, *mnist, tmp_path / "split", resume=ckpt, threads=1)
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["test_accuracy"] == whole["test_accuracy"]
    a, b = weights(tmp_path / "whole" / "model.npz"), weights(tmp_path / "split" / "model.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in whole["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed["history"]]


def test_without_a_validation_split_the_last_epoch_is_kept(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 500, "epochs": 2, "val_size": 0})
    metrics = train(cfg, get_backend("cpu"), *mnist, tmp_path)
    assert metrics["val_samples"] == 0 and metrics["validation"] is None
    assert metrics["best_epoch"] == 2 and metrics["kept"] == "last epoch (no validation split)"
    assert "val_accuracy" not in metrics and not any("val_loss" in r for r in metrics["history"])
    assert metrics["train_samples"] == 500
    header = load_model(tmp_path / "model.npz", get_backend("cpu"))[1]
    assert header["epochs"] == 2 and header["kept"] == metrics["kept"]


class NoTestSet:
    """A test split that fails the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")


def test_without_a_test_split_the_test_set_is_never_evaluated(tmp_path, mnist):
    cfg = load_config(overrides={"limit": 500, "epochs": 2, "val_size": 1000})
    metrics = train(cfg, get_backend("cpu"), mnist[0], None, tmp_path)
    assert metrics["status"] == "completed" and metrics["best_epoch"] in (1, 2)
    assert not [k for k in metrics if k.startswith("test")]
    assert not [k for k in load_model(tmp_path / "model.npz", get_backend("cpu"))[1] if k.startswith("test")]
    with pytest.raises(AssertionError, match="the test split was read"):
        train(cfg, get_backend("cpu"), mnist[0], NoTestSet(), tmp_path / "with")  # the poison does work


def test_curves_draw_validation_and_label_old_test_curves(tmp_path):
    from PIL import Image

    rows = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.9, "val_loss": 1.2 / e, "val_accuracy": 0.88}
            for e in (1, 2, 3)]
    curves(rows, tmp_path / "new.png", best_epoch=2)
    old = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.9, "test_loss": 1.2 / e, "test_accuracy": 0.88}
           for e in (1, 2, 3)]
    curves(old, tmp_path / "old.png")
    for name in ("new.png", "old.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and np.asarray(image.convert("L")).std() > 10


def test_resume_refuses_a_checkpoint_with_other_validation_rows(tmp_path, mnist):
    cpu = get_backend("cpu")
    train(load_config(overrides={"limit": 300, "epochs": 1, "val_size": 1000}), cpu, *mnist, tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoint.npz")
    other = load_config(overrides={"limit": 300, "epochs": 2, "val_size": 2000})
    with pytest.raises(GpunetError, match=r"trained on 300 mnist samples \(validation rows \w{12}\), not 300 mnist "
                                          r"samples \(validation rows \w{12}\); cannot resume"):
        train(other, cpu, *mnist, tmp_path, resume=ckpt)


def test_train_says_which_epoch_it_kept(tmp_path):
    result = runner.invoke(app, ["train", "--device", "cpu", "--epochs", "2", "--limit", "500", "--val-size", "1000",
                                 "--no-plots", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert (f"test accuracy {100 * metrics['test_accuracy']:.2f}% of the kept model (epoch {metrics['best_epoch']}, "
            "best on validation) after 2 epochs") in result.stdout
    assert "| val " in result.stderr
