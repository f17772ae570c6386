"""`gpunet evaluate`: the confusion matrix, per-class scores and accuracy agree with each other and with the
run's metrics.json."""

import json

import numpy as np
import pytest

from helpers import cli


def test_evaluate_confusion_matrix_matches_accuracy(trained_run, mnist):
    test_split = mnist[1]
    result = cli("evaluate", trained_run, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cm = np.array(report["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == len(test_split.labels) == report["samples"]
    assert np.trace(cm) / cm.sum() == pytest.approx(report["accuracy"], abs=1e-12)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert [r["support"] for r in report["per_class"]] == np.bincount(test_split.labels).tolist()
    for k, r in enumerate(report["per_class"]):
        assert r["recall"] == pytest.approx(cm[k, k] / cm[k].sum())
        assert r["precision"] == pytest.approx(cm[k, k] / cm[:, k].sum())
        assert r["f1"] == pytest.approx(2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"]))

    table = cli("evaluate", trained_run, "--device", "cpu")
    assert table.exit_code == 0
    assert f"accuracy {100 * report['accuracy']:.2f}%" in table.stdout
    assert "confusion matrix (rows: true class, columns: predicted class)" in table.stdout


def test_evaluate_reads_nothing_from_the_device(standin, mnist):
    """`evaluate` keeps its promise on CuPy's rules (bincount there reads the device twice): no read until the
    caller's one `to_numpy`, and the same counts as on the CPU."""
    from gpunet.core.backend import get_backend
    from gpunet.core.model import MLP
    from gpunet.data.load import DeviceData
    from gpunet.runs.evaluate import evaluate

    counts = {}
    for device in ("cpu", "cuda"):
        backend = get_backend(device)
        scores = evaluate(MLP(backend, seed=1), DeviceData(backend, mnist[1], 500))
        assert device == "cpu" or (standin.ledger.syncs, standin.ledger.refused) == (0, [])
        counts[device] = backend.to_numpy(scores.confusion)
    assert counts["cpu"].sum() == 500
    np.testing.assert_array_equal(counts["cuda"], counts["cpu"])
