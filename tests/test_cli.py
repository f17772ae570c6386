"""The command line through typer's CliRunner: a short run, clean errors, nothing overwritten."""

import json
import sys
import types

import numpy as np
import pytest
from typer.testing import CliRunner

import gpunet
from gpunet import train as train_module
from gpunet.backend import get_backend
from gpunet.cli import app
from gpunet.store import load_checkpoint, load_model

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def assert_clean_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and result.stderr.count("error: ") == 1, result.stderr
    for f in fragments:
        assert f in line, line


def test_train_writes_metrics_and_model(tmp_path):
    out = tmp_path / "run"
    result = run("train", "--device", "cpu", "--epochs", "1", "--limit", "2000", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 1 and metrics["train_samples"] == 2000
    assert metrics["device"].startswith("cpu") and 0 < metrics["test_accuracy"] <= 1
    assert (out / "model.npz").stat().st_size > 100_000
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    result = run("train", "--device", "cpu", "--epochs", "1", "--limit", "100", "--out", str(tmp_path))
    assert_clean_error(result, "already holds a run")
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_cuda_without_cupy_is_one_clean_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail as if it were not installed
    result = run("train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert_clean_error(result, "CuPy is not installed", "pip install")
    assert not (tmp_path / "r").exists()


def test_cuda_without_a_usable_gpu_is_one_clean_line(monkeypatch, tmp_path):
    cupy = types.ModuleType("cupy")  # CuPy installed, but no device or driver
    cupy.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    result = run("train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert_clean_error(result, "no usable CUDA GPU", "--device cpu")


def test_auto_falls_back_to_cpu_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = run("train", "--epochs", "1", "--limit", "200", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "--device auto chose cpu" in result.stderr


GOOD = {"hidden": "128", "epochs": "1", "batch_size": "128", "lr": "0.1"}


@pytest.mark.parametrize("key, value, fragments", [
    ("lr", "-0.1", ["lr = -0.1", "a number > 0"]),
    ("epochs", "0", ["epochs = 0", "integer >= 1"]),
    ("hidden", "0", ["hidden = 0"]),
    ("epochs", '"ten"', ["epochs = 'ten'"]),
    ("batch_size", '"half"', ["batch_size = 'half'", '"full"']),
    ("optimizer", '"sgdd"', ["optimizer = 'sgdd'", "gd | momentum | adam"]),
    ("lrr", "0.1", ["unknown key 'lrr'"]),
    ("lr", "", ["not valid TOML"]),
])
def test_bad_config_values_exit_2(tmp_path, key, value, fragments):
    path = tmp_path / "bad.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in {**GOOD, key: value}.items()))
    result = run("train", "--config", str(path), "--device", "cpu", "--out", str(tmp_path / "r"))
    assert_clean_error(result, str(path), *fragments)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "epochs = 0"),
    (["--lr", "-1"], "lr = -1.0"),
    (["--hidden", "0"], "hidden = [0]"),
    (["--hidden", "a,b"], "--hidden 'a,b'"),
    (["--batch-size", "big"], "--batch-size 'big'"),
])
def test_bad_options_exit_2(tmp_path, args, fragment):
    assert_clean_error(run("train", "--device", "cpu", *args, "--out", str(tmp_path / "r")), fragment)


def test_config_that_is_not_text(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe lr = 1\n")
    assert_clean_error(run("train", "--config", str(path)), str(path), "not a text file")


def test_out_of_memory_is_one_clean_line(tmp_path):
    assert_clean_error(run("train", "--device", "cpu", "--hidden", "10000000000", "--out", str(tmp_path / "r")),
                       "over the limit of 50,000,000")  # refused from its size, before the data loads


def test_missing_config_file(tmp_path):
    assert_clean_error(run("train", "--config", str(tmp_path / "nope.toml")), "config file not found")


def test_diverging_run_stops_with_a_hint(tmp_path):
    out = tmp_path / "r"
    result = run("train", "--device", "cpu", "--limit", "500", "--epochs", "3", "--lr", "1e30",
                 "--out", str(out))
    assert_clean_error(result, "at epoch 1", "lower the learning rate")
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_divergence_keeps_the_last_good_model_and_checkpoint(tmp_path, monkeypatch):
    """Epoch 1 trains normally; from epoch 2 on the learning rate explodes (4 steps per epoch)."""
    monkeypatch.setattr(train_module, "learning_rate", lambda base, schedule, step, total: base if step < 4 else 1e30)
    out = tmp_path / "r"
    result = run("train", "--device", "cpu", "--limit", "500", "--epochs", "3", "--checkpoint-every", "1",
                 "--out", str(out))
    assert_clean_error(result, "at epoch 2", "the last good model.npz is kept")
    net, header = load_model(out / "model.npz", get_backend("cpu"))
    assert header["epochs"] == 1 and all(np.isfinite(v).all() for v in net.state_dict().values())
    assert load_checkpoint(out / "checkpoint.npz").meta["epoch"] == 1
    assert json.loads((out / "metrics.json").read_text())["status"] == "diverged"


def test_version_and_info():
    assert run("--version").stdout.strip() == f"gpunet {gpunet.__version__}"
    result = run("info")
    assert result.exit_code == 0 and "numpy" in result.stdout and "cupy" in result.stdout


def test_train_is_a_subcommand_with_its_own_help():
    result = run("--help")
    assert result.exit_code == 0 and "train" in result.stdout and "info" in result.stdout
    result = run("train", "--help")
    assert result.exit_code == 0 and "--epochs" in result.stdout and "--device" in result.stdout
