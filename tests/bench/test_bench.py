"""`gpunet bench` works end to end on a small subset; nothing here depends on timing."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.core.backend import get_backend
from gpunet.bench.contenders import Gpunet, Plain, gemm_flops, load_data
from gpunet.bench.run import parse_batch_sizes
from gpunet.apps.cli import app
from gpunet.core.model import MLP
from gpunet.core.optim import learning_rate, make_optimizer
from gpunet.core.step import TrainStep

runner = CliRunner()


def test_bench_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--batch-sizes", "32,full", "--epochs", "2",
                                 "--limit", "256", "--contenders", "gpunet,numpy", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("machine", "blas", "s/epoch", "samples/s", "% sgemm", "peak RSS MiB", "GEMM floor", "gpunet", "numpy"):
        assert text in result.output
    report = json.loads(out.read_text())
    assert report["samples"] == 256 and report["sizes"] == [784, 128, 10] and report["device"] == "cpu"
    assert {"cpu", "cores", "blas", "load_average"} <= set(report["machine"])
    rows = report["results"]
    assert [(r["batch"], r["contender"]) for r in rows] == [(32, "gpunet"), (32, "numpy"), ("full", "gpunet"),
                                                            ("full", "numpy")]
    for r in rows:
        assert len(r["epoch_seconds"]) == 2 and r["seconds_per_epoch"] > 0
        assert r["samples_per_second"] == pytest.approx(256 / r["seconds_per_epoch"])
        assert r["gflop_per_epoch"] == pytest.approx(gemm_flops(256, (784, 128, 10)) / 1e9)
        assert r["sgemm_gflops"] > 0 and r["gemm_floor_seconds"] > 0 and r["ratio_to_pytorch"] is None
        assert r["peak_mib"] > 0 and r["peak_process_mib"] > 0
        assert np.isfinite(r["train_loss"])


def test_bench_without_memory_and_pytorch_when_installed():
    result = runner.invoke(app, ["bench", "--device", "cpu", "--batch-sizes", "full", "--epochs", "1",
                                 "--limit", "128", "--no-memory"])
    assert result.exit_code == 0, result.output
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "pytorch skipped: not installed" in result.output
    else:
        assert "pytorch" in result.output and "1.00x" in result.output


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "0"], "--batch-sizes"),
    (["--batch-sizes", "128,huge"], "--batch-sizes"),
    (["--contenders", "tensorflow"], "--contenders"),
    (["--json", "/nonexistent-folder/bench.json"], "--json"),  # refused before any timing
    (["--whole-run", "--json", "/nonexistent-folder/bench.json"], "--json"),
])
def test_bench_rejects_bad_options(args, message):
    result = runner.invoke(app, ["bench", "--device", "cpu", "--limit", "64", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_parse_batch_sizes_and_flop_count():
    assert parse_batch_sizes("128, 1024,full") == [128, 1024, "full"]
    # 784-128-10 on 60,000 samples: 2*m*(2*(784*128 + 128*10) + 128*10) = 24.5 GFLOP per epoch.
    assert gemm_flops(60000, (784, 128, 10)) == pytest.approx(24.545e9, rel=1e-3)


def test_gemm_floor_takes_the_faster_shapes(monkeypatch):
    """Where the backend takes a batch in row chunks, the floor is timed at both the whole batch's and one
    chunk's shapes, and the faster rate sets it (chunking must not flatter the ratio to the floor)."""
    from gpunet.bench import timing

    asked = []

    def rate(backend, B, rows, sizes, min_seconds):
        asked.append(rows)
        return {60000: 1e11, 4096: 2e11, 128: 1.5e11}[rows]

    monkeypatch.setattr(timing, "sgemm_rate", rate)
    cpu = get_backend("cpu")
    assert timing.gemm_floor(cpu, 60000, 60000, (784, 128, 10)) == (200.0, gemm_flops(60000, (784, 128, 10)) / 2e11)
    assert sorted(asked) == [4096, 60000]
    asked.clear()
    assert timing.gemm_floor(cpu, 128, 60000, (784, 128, 10))[0] == 150.0 and asked == [128]


def test_contenders_train_the_same_net(tmp_path):
    """gpunet's step and the plain reference, same init and shuffles, agree to float64 rounding."""
    be = get_backend("cpu", "float64")
    data = load_data(be, 300)
    init = MLP(be, seed=0).state_dict()
    start = {k: v.copy() for k, v in init.items()}
    for B in (64, data.m):
        g, p = Gpunet(be, data, B, init, False), Plain(be, data, B, init, False)
        for e in (1, 2):
            assert g.epoch(e) == pytest.approx(p.epoch(e), rel=1e-10)
        for k in init:
            np.testing.assert_allclose(g.net.params[k], p.p[k], rtol=1e-10, atol=1e-12)
            assert np.array_equal(init[k], start[k])  # every contender starts from the same, untouched weights


def test_whole_run_writes_its_table_and_json(tmp_path):
    """`--whole-run` trains the recipe end to end through gpunet.runs.train.train; checks structure, not speed."""
    out = tmp_path / "whole.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--whole-run", "--epochs", "1", "--limit", "256",
                                 "--repeats", "2", "--contenders", "gpunet", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("machine", "whole training run", "wall s", "test accuracy", "included:"):
        assert text in result.output
    report = json.loads(out.read_text())
    assert report["mode"] == "whole-run" and report["repeats"] == 2 and report["device"] == "cpu"
    assert report["config_path"] == "default"
    assert report["config"]["epochs"] == 1 and report["config"]["limit"] == 256 and report["config"]["lr"] == 0.2
    assert report["train_samples"] == 256 and report["test_samples"] == 10000
    [row] = report["results"]
    assert row["contender"] == "gpunet" and row["ratio_to_pytorch"] is None
    assert len(row["run_seconds"]) == 2 and row["wall_seconds"] > 0 and 0 < row["epoch_seconds"]
    # The same recipe and seed: every run reaches the same accuracy, the one `gpunet train` reports.
    assert len(set(row["test_accuracies"])) == 1 and 0.1 < row["test_accuracy"] <= 1


def test_whole_run_with_pytorch():
    pytest.importorskip("torch")
    result = runner.invoke(app, ["bench", "--device", "cpu", "--whole-run", "--epochs", "1", "--limit", "256",
                                 "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "gpunet" in result.output and "pytorch" in result.output and "1.00x" in result.output


def test_whole_run_rejects_numpy_only():
    result = runner.invoke(app, ["bench", "--device", "cpu", "--whole-run", "--contenders", "numpy"])
    assert result.exit_code == 2 and "--whole-run times gpunet and pytorch" in result.output


def test_torch_follows_gpunets_recipe():
    """PyTorch's side of --whole-run: with the same batches, momentum and per-step learning rates on a
    784-16-8-10 net, it ends with gpunet's weights (float64)."""
    pytest.importorskip("torch")
    from gpunet.bench.torch import Torch

    be = get_backend("cpu", "float64")
    data = load_data(be, 200)
    net = MLP(be, (784, 16, 8, 10), seed=1)
    init = net.state_dict()
    lrs = [learning_rate(0.2, "cosine", s, 3) for s in range(3)]
    step = TrainStep(net, make_optimizer("momentum", be, net.params, 0.8), data.X, data.Y, data.y)
    for lr in lrs:
        step(None, lr)
    torch_net = Torch(be, be.to_numpy(data.X), be.to_numpy(data.y), data.m, init, optimizer="momentum", momentum=0.8)
    for lr in lrs:  # the full batch: no shuffle, one step per epoch
        torch_net.epoch(0, [lr])
    layers = [m for m in torch_net.model if hasattr(m, "weight")]
    for l, layer in enumerate(layers, start=1):
        np.testing.assert_allclose(layer.weight.detach().numpy().T, net.params[f"W{l}"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer.bias.detach().numpy(), net.params[f"b{l}"], rtol=1e-9, atol=1e-12)
