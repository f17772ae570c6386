"""Training end to end on a subset: it learns, and the run directory holds what it promises."""

import json

import numpy as np
import pytest

from gpunet.backend import get_backend
from gpunet.config import load_config
from gpunet.data import load_mnist
from gpunet.store import load_model
from gpunet.train import train


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


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
    cfg = load_config(overrides={"limit": 500, "epochs": 2, "batch_size": 50})
    a = train(cfg, get_backend("cpu"), *mnist, tmp_path / "a")
    b = train(cfg, get_backend("cpu"), *mnist, tmp_path / "b")
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
