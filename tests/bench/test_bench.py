"""`gpunet bench` works end to end on a small subset; nothing here depends on timing."""

import json
import os
import signal

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
from gpunet.core.threads import candidates, pool_threads
from gpunet.errors import GpunetError

runner = CliRunner()


def test_bench_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--batch-sizes", "32,full", "--epochs", "2",
                                 "--limit", "256", "--contenders", "gpunet,numpy", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("machine", "blas", "threads", "s/epoch", "samples/s", "vs best", "% sgemm", "peak RSS MiB",
                 "GEMM floor", "gpunet", "numpy"):
        assert text in result.output
    report = json.loads(out.read_text())
    assert report["samples"] == 256 and report["sizes"] == [784, 128, 10] and report["device"] == "cpu"
    assert {"cpu", "cores", "blas", "load_average"} <= set(report["machine"])
    assert report["busy"] == 0 and report["threads"] == "auto"
    rows = report["results"]
    counts = [None, *candidates(pool_threads())]  # each contender at its defaults, then at each fixed count
    assert [(r["batch"], r["contender"], r["setting"]) for r in rows] == [
        (b, c, s) for b in (32, "full") for c in ("gpunet", "numpy") for s in counts]
    for r in rows:
        assert r["load"] == "quiet" and len(r["epoch_seconds"]) == 2 and r["seconds_per_epoch"] > 0
        assert r["samples_per_second"] == pytest.approx(256 / r["seconds_per_epoch"])
        assert r["gflop_per_epoch"] == pytest.approx(gemm_flops(256, (784, 128, 10)) / 1e9)
        assert r["sgemm_gflops"] > 0 and r["gemm_floor_seconds"] > 0 and r["ratio_to_pytorch"] is None
        fixed = [x["seconds_per_epoch"] for x in rows if (x["batch"], x["contender"]) == (r["batch"], r["contender"])
                 and x["setting"] is not None]
        assert r["ratio_to_best"] == pytest.approx(r["seconds_per_epoch"] / min(fixed))
        assert (r["peak_mib"] > 0 and r["peak_process_mib"] > 0) if r["setting"] is None else r["peak_mib"] is None
        assert np.isfinite(r["train_loss"])
        want = (str(r["setting"]) if r["setting"] is not None else
                "auto: " if r["contender"] == "gpunet" else f"default ({pool_threads()})")
        assert r["threads"].startswith(want)


def test_bench_busy_times_each_contender_quiet_and_busy_and_stops_its_loops(tmp_path, monkeypatch):
    from gpunet.bench import busy

    started = []
    real = busy.Busy.load

    def load(self, which):
        real(self, which)
        started.extend(p for p in self.procs if p not in started)

    monkeypatch.setattr(busy.Busy, "load", load)
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--batch-sizes", "full", "--epochs", "1",
                                 "--limit", "128", "--contenders", "gpunet,numpy", "--no-memory", "--no-best",
                                 "--busy", "2", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "quiet and with 2 busy-loop process(es)" in result.output and "busy/quiet" in result.output
    rows = json.loads(out.read_text())["results"]
    assert [(r["contender"], r["load"]) for r in rows] == [("gpunet", "quiet"), ("gpunet", "busy"),
                                                           ("numpy", "quiet"), ("numpy", "busy")]
    assert rows[0]["threads"] == "1" and rows[0]["ratio_to_best"] is None
    assert len(started) >= 2 and all(p.poll() is not None for p in started)  # every loop it started is gone


def test_busy_loops_spin_until_stopped_even_by_an_error():
    from gpunet.bench.busy import Busy

    with pytest.raises(RuntimeError):
        with Busy(2) as hogs:
            hogs.load("busy")
            procs = list(hogs.procs)
            assert len(procs) == 2 and all(p.poll() is None for p in procs)
            hogs.load("busy")  # already busy: no more loops
            assert hogs.procs == procs
            raise RuntimeError("a contender failed")
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(GpunetError):
        Busy(-1)


def test_a_busy_loop_ends_when_the_bench_is_killed():
    """The bench process dies without cleaning up (SIGKILL): its loops notice their parent is gone and end."""
    import subprocess
    import sys
    import time

    code = ("import os, sys\nfrom gpunet.bench.busy import Busy\nb = Busy(1)\nb.load('busy')\n"
            "print(b.procs[0].pid, flush=True)\nos._exit(0)")
    pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break  # gone (reaped)
        if state == "Z":  # ended; its new parent has not reaped it yet
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the busy loop outlived the bench")


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
    (["--threads", "0"], "--threads '0'"),
    (["--busy", "-1"], "--busy"),
])
def test_bench_rejects_bad_options(args, message):
    result = runner.invoke(app, ["bench", "--device", "cpu", "--limit", "64", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("mode", [[], ["--whole-run"]])
def test_bench_refuses_a_huge_busy_count_before_starting_anything(monkeypatch, mode):
    """--busy starts a process per loop: a count over 4 per core is one line, and no loop is started."""
    from gpunet.bench import busy

    monkeypatch.setattr(busy, "cores", lambda: 2)
    monkeypatch.setattr(busy.subprocess, "Popen", lambda *a, **k: pytest.fail("a busy loop was started"))
    result = runner.invoke(app, ["bench", "--device", "cpu", "--limit", "64", *mode, "--busy", "100000"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--busy 100000: give 0 to 8 busy processes (4 per core on this machine)" in result.output
    assert busy.parse_busy(8) == 8
    with pytest.raises(GpunetError, match="--busy 9"):
        busy.Busy(9)


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


def test_contenders_train_the_same_net(backend64):
    """gpunet's step and the plain reference, same init and shuffles, agree to float64 rounding on every device."""
    be = backend64
    data = load_data(be, 300)
    init = MLP(be, seed=0).state_dict()
    start = {k: v.copy() for k, v in init.items()}
    for B in (64, data.m):
        g, p = Gpunet(be, data, B, init, False), Plain(be, data, B, init, False)
        for e in (1, 2):
            assert g.epoch(e) == pytest.approx(p.epoch(e), rel=1e-10)
        for k in init:
            np.testing.assert_allclose(be.to_numpy(g.net.params[k]), be.to_numpy(p.p[k]), rtol=1e-10, atol=1e-12)
            assert np.array_equal(init[k], start[k])  # every contender starts from the same, untouched weights


def test_whole_run_writes_its_table_and_json(tmp_path):
    """`--whole-run` trains the recipe end to end through gpunet.runs.train.train; checks structure, not speed."""
    out = tmp_path / "whole.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--whole-run", "--epochs", "1", "--limit", "256",
                                 "--repeats", "2", "--contenders", "gpunet", "--no-best", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for text in ("machine", "whole training run", "wall s", "test accuracy", "included:"):
        assert text in result.output
    report = json.loads(out.read_text())
    assert report["mode"] == "whole-run" and report["repeats"] == 2 and report["device"] == "cpu"
    assert report["config_path"] == "default"
    assert report["config"]["epochs"] == 1 and report["config"]["limit"] == 256 and report["config"]["lr"] == 0.2
    assert report["train_samples"] == 256 and report["test_samples"] == 10000
    [row] = report["results"]
    assert row["contender"] == "gpunet" and row["ratio_to_pytorch"] is None and row["threads"].startswith("auto")
    assert len(row["run_seconds"]) == 2 and row["wall_seconds"] > 0 and 0 < row["epoch_seconds"]
    # The same recipe and seed: every run reaches the same accuracy, the one `gpunet train` reports.
    assert len(set(row["test_accuracies"])) == 1 and 0.1 < row["test_accuracy"] <= 1


def test_whole_run_busy_and_at_each_thread_count(tmp_path):
    out = tmp_path / "whole.json"
    result = runner.invoke(app, ["bench", "--device", "cpu", "--whole-run", "--epochs", "1", "--limit", "256",
                                 "--repeats", "1", "--contenders", "gpunet", "--busy", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "seconds of training" in result.output
    rows = json.loads(out.read_text())["results"]
    counts = [None, *candidates(pool_threads())]
    assert [(r["setting"], r["load"]) for r in rows] == [(c, load) for c in counts for load in ("quiet", "busy")]
    assert all(r["ratio_to_best"] > 0 for r in rows)


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


def test_the_gpu_floor_is_a_graph_timed_by_cuda_events(standin, monkeypatch):
    """On cuda the floor's products are captured once and replayed, each timing between two CUDA events."""
    from gpunet.bench import timing

    backend = get_backend("cuda")
    captured, recorded = [], []
    capture, record = type(backend).capture, standin.cuda.Event.record
    monkeypatch.setattr(type(backend), "capture", lambda self, fn: captured.append(fn) or capture(self, fn))
    monkeypatch.setattr(standin.cuda.Event, "record", lambda self, stream=None: recorded.append(self) or record(self))
    gflops, seconds = timing.gemm_floor(backend, 128, 60000, (784, 128, 10), min_seconds=0)
    assert len(captured) == 1 and len(recorded) == 2 * 5 and gflops > 0 and seconds > 0


def test_bench_on_cuda(standin, tmp_path):
    """The bench's gpunet (eager and as a CUDA graph) and numpy contenders on cuda."""
    for graph in ([], ["--cuda-graph"]):
        result = runner.invoke(app, ["bench", "--device", "cuda", "--batch-sizes", "64,full", "--epochs", "1",
                                     "--limit", "256", "--contenders", "gpunet,numpy", "--no-memory", *graph,
                                     "--json", str(tmp_path / "b.json")])
        assert result.exit_code == 0, result.output
        rows = json.loads((tmp_path / "b.json").read_text())["results"]
        assert {(r["contender"], r["batch"]) for r in rows} >= {("gpunet", 64), ("numpy", 64)}, rows
