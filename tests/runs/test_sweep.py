"""`gpunet sweep`, a grid of configs compared on validation, resumable, never touching the test set."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpunet.runs import sweep as sweep_module
from gpunet.apps.cli import app
from gpunet.runs.config import parse_values
from gpunet.errors import GpunetError
from gpunet.core.threads import cores, worker_threads
from gpunet.runs.sweep import expand_grid, point_name
from helpers import assert_point_files

runner = CliRunner()
TINY = ("--device", "cpu", "--limit", "300", "--val-size", "500", "--epochs", "1")


def sweep(*args):
    return runner.invoke(app, ["sweep", *TINY, *map(str, args)])


class NoTestSet:
    """A test split that fails the moment anything reads it."""

    def __getattr__(self, name):
        raise AssertionError(f"the sweep read the test split ({name})")


@pytest.fixture
def no_test_set(monkeypatch, mnist):
    """The sweep's dataset loader hands out a poisoned test split."""
    train_split = mnist[0]
    monkeypatch.setattr(sweep_module, "load_dataset", lambda *args, **kwargs: (train_split, NoTestSet()))


def test_grid_expansion_is_the_product_in_key_order():
    grid = expand_grid({"seed": [0, 1], "lr": [0.1, 0.2, 0.3], "epochs": [6], "hidden": None})
    assert len(grid) == 6
    assert grid[0] == {"epochs": 6, "lr": 0.1, "seed": 0} and grid[1] == {"epochs": 6, "lr": 0.1, "seed": 1}
    assert [list(p) for p in grid] == [["epochs", "lr", "seed"]] * 6
    assert len({point_name(p) for p in grid}) == 6
    assert point_name({"hidden": [256, 128], "lr": 0.05}) == "hidden=256x128_lr=0.05"


def test_list_values_are_parsed_and_checked_per_element():
    assert parse_values("lr", "0.05,0.1, 0.2") == [0.05, 0.1, 0.2]
    assert parse_values("batch_size", "64,full,64") == [64, "full"]
    assert parse_values("hidden", "128;256,128") == [[128], [256, 128]]
    assert parse_values("hidden", "64,128") == [[64], [128]]
    assert parse_values("optimizer", "gd,adam") == ["gd", "adam"]
    with pytest.raises(GpunetError, match="--lr 'abc': lr must be a number > 0"):
        parse_values("lr", "0.1,abc")


@pytest.mark.parametrize("args, fragment", [
    (["--lr", "0.1,abc"], "--lr 'abc'"),
    (["--lr", "0.1,-1"], "lr = -1.0 is not allowed"),
    (["--epochs", "2,0"], "epochs = 0 is not allowed"),
    (["--epochs", "2,"], "--epochs ''"),
    (["--optimizer", "sgd,adam"], "optimizer = 'sgd' is not allowed"),
    (["--batch-size", "64,half"], "--batch-size 'half'"),
    (["--val-size", "0"], "val_size = 0: a sweep compares its points on the validation split"),
])
def test_bad_list_values_are_one_clean_line(tmp_path, args, fragment):
    assert_one_line_and_no_folder(tmp_path, ["--device", "cpu", *args], fragment)


def test_cuda_without_cupy_is_one_line_before_the_folder_is_made(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails as if it were not installed
    assert_one_line_and_no_folder(tmp_path, ["--device", "cuda", "--lr", "0.1,0.2"], "CuPy is not installed")


def assert_one_line_and_no_folder(tmp_path, args, fragment):
    result = runner.invoke(app, ["sweep", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def test_sweep_writes_its_results_resumes_and_never_reads_the_test_set(tmp_path, no_test_set):
    out = tmp_path / "s"
    first = sweep("--out", out, "--lr", "0.1,0.3", "--seed", "0,1")
    assert first.exit_code == 0, first.output
    assert "0 finished already, 4 to run" in first.stdout and "best point on validation: " in first.stdout
    points = json.loads((out / "sweep.json").read_text())
    assert len(points) == 4
    for p in points:
        assert p["status"] == "completed" and 0 < p["val_accuracy"] <= 1 and p["val_loss"] > 0
        assert p["best_epoch"] == 1 and p["train_seconds"] > 0
        assert p["config"]["limit"] == 300 and p["config"]["val_size"] == 500 and p["config"]["epochs"] == 1
        assert set(p["point"]) == {"epochs", "lr", "seed", "limit", "val_size"}
        metrics = json.loads((out / point_name(p["point"]) / "metrics.json").read_text())
        assert p["run_dir"] == str(out / point_name(p["point"]))
        assert metrics["val_accuracy"] == p["val_accuracy"]
        assert not [k for k in {**metrics, **p} if k.startswith("test")]  # no test figures anywhere
        assert_point_files(out / point_name(p["point"]))
    assert sorted((p["config"]["lr"], p["config"]["seed"]) for p in points) == [(0.1, 0), (0.1, 1), (0.3, 0),
                                                                                 (0.3, 1)]
    best = max(points, key=lambda p: (p["val_accuracy"], -p["val_loss"]))
    assert f"best point on validation: {point_name(best['point'])}" in first.stdout
    with open(out / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_accuracy"]) for r in rows] == [p["val_accuracy"] for p in points]
    assert {r["lr"] for r in rows} == {"0.1", "0.3"}
    with Image.open(out / "sweep.png") as image:
        assert image.format == "PNG" and image.width >= 300 and np.asarray(image.convert("L")).std() > 10
    stamps = {p["run_dir"]: (Path(p["run_dir"]) / "metrics.json").stat().st_mtime_ns for p in points}

    # The same command again runs nothing; a larger grid runs only the new points.
    again = sweep("--out", out, "--lr", "0.1,0.3", "--seed", "0,1")
    assert again.exit_code == 0 and "4 finished already, 0 to run" in again.stdout
    wider = sweep("--out", out, "--lr", "0.1,0.3", "--seed", "0,1,2")
    assert wider.exit_code == 0 and "4 finished already, 2 to run" in wider.stdout
    assert len(json.loads((out / "sweep.json").read_text())) == 6
    for run_dir, stamp in stamps.items():
        assert (Path(run_dir) / "metrics.json").stat().st_mtime_ns == stamp  # finished points were not run again


def test_no_plots_draws_no_png_and_removes_a_stale_sweep_png(tmp_path, no_test_set):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.png").write_bytes(b"a plot of an earlier sweep")
    result = sweep("--out", out, "--lr", "0.1,0.2", "--no-plots")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["epochs=1_lr=0.1_limit=300_val_size=500",
                                                     "epochs=1_lr=0.2_limit=300_val_size=500", "sweep.csv",
                                                     "sweep.json"]
    for p in json.loads((out / "sweep.json").read_text()):
        assert p["status"] == "completed"
        assert_point_files(Path(p["run_dir"]), curves=False)


def test_a_dataset_that_cannot_load_leaves_no_folder(tmp_path, monkeypatch):
    def nowhere(*args, **kwargs):
        raise GpunetError("mnist is not on this machine and could not be downloaded")

    monkeypatch.setattr(sweep_module, "load_dataset", nowhere)
    assert_one_line_and_no_folder(tmp_path, ["--device", "cpu", "--lr", "0.1,0.2"], "mnist is not on this machine")


def test_an_unfinished_point_is_run_again_and_a_foreign_one_refused(tmp_path, no_test_set):
    out = tmp_path / "s"
    assert sweep("--out", out, "--lr", "0.1,0.2").exit_code == 0
    point = out / point_name({"epochs": 1, "lr": 0.2, "limit": 300, "val_size": 500})
    metrics = json.loads((point / "metrics.json").read_text())
    (point / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    result = sweep("--out", out, "--lr", "0.1,0.2")
    assert result.exit_code == 0 and "1 finished already, 1 to run" in result.stdout
    assert json.loads((point / "metrics.json").read_text())["status"] == "completed"

    (point / "metrics.json").write_text(json.dumps({**metrics, "config": {**metrics["config"], "momentum": 0.5}}))
    foreign = sweep("--out", out, "--lr", "0.1,0.2")
    assert foreign.exit_code == 2 and "holds a run of another config" in foreign.stderr
    assert "Traceback" not in foreign.output


def test_a_diverging_point_is_recorded_and_the_sweep_goes_on(tmp_path, no_test_set):
    result = sweep("--out", tmp_path / "s", "--lr", "0.1,1e30")
    assert result.exit_code == 0, result.output
    points = {p["config"]["lr"]: p for p in json.loads((tmp_path / "s" / "sweep.json").read_text())}
    assert points[1e30]["status"] == "diverged" and points[1e30]["val_accuracy"] is None
    assert points[0.1]["status"] == "completed" and points[0.1]["val_accuracy"] > 0.3
    assert "diverged" in result.stdout
    assert_point_files(Path(points[0.1]["run_dir"]))
    assert points[1e30]["best_epoch"] is None  # it diverged in its first epoch: no history, no curves
    assert not (Path(points[1e30]["run_dir"]) / "curves.png").exists()


def test_two_worker_processes_give_the_same_points_as_one(tmp_path, no_test_set):
    share = worker_threads("auto", 2)  # each of 2 workers' threads: its share of the cores (1 each on 2 cores)
    assert share == max(1, cores() // 2)
    one = sweep("--out", tmp_path / "one", "--lr", "0.1,0.2", "--threads", share)  # the same count: the same sums
    two = sweep("--out", tmp_path / "two", "--lr", "0.1,0.2", "--workers", 2)
    assert one.exit_code == 0 and two.exit_code == 0, two.output
    assert "in 2 processes" in two.stdout
    a, b = (json.loads((tmp_path / d / "sweep.json").read_text()) for d in ("one", "two"))
    assert [(p["point"], p["val_accuracy"], p["val_loss"]) for p in a] == \
           [(p["point"], p["val_accuracy"], p["val_loss"]) for p in b]
    assert all(not [k for k in json.loads((tmp_path / "two" / point_name(p["point"]) / "metrics.json").read_text())
                    if k.startswith("test")] for p in b)
    asked = [json.loads((tmp_path / "two" / point_name(p["point"]) / "metrics.json").read_text())["threads"]["asked"]
             for p in b]
    assert asked == [share, share]
    for p in b:
        assert_point_files(tmp_path / "two" / point_name(p["point"]))  # drawn in the worker, written here


def test_threads_is_checked_before_any_work(tmp_path):
    result = sweep("--out", tmp_path / "s", "--lr", "0.1", "--threads", "none")
    assert result.exit_code == 2 and "--threads 'none'" in result.output and not (tmp_path / "s").exists()


# Names unique by value, and grids of bounded size ------------------------------------------------------------------

NEAR = {  # values that look alike when printed short, each a config of its own
    "hidden": [[128], [12, 8], [1, 28], [128, 1]],
    "lr": [0.1, 0.1000001, 0.10000000000000002, 1e-5, 1.0000001e-5],
    "batch_size": [64, "full"],
    "momentum": [0.9, 0.9000001, 0.90000001],
}


def test_point_names_are_unique_by_value():
    grid = expand_grid(NEAR)
    assert len({point_name(p) for p in grid}) == len(grid) == 4 * 5 * 2 * 3


def test_neighbouring_floats_get_names_of_their_own():
    rng = np.random.default_rng(4)
    for x in np.concatenate([rng.random(200), 10.0 ** rng.uniform(-12, 3, 200)]):
        x = float(x)
        neighbours = [x, float(np.nextafter(x, 2 * x)), float(np.nextafter(x, 0))]
        assert len({point_name({"lr": v}) for v in neighbours}) == 3, neighbours


def test_point_names_of_many_keys_stay_short_and_unique():
    point = {"hidden": [100_000] * 40, "lr": 0.12345678901234568, "momentum": 0.8765432109876543,
             "batch_size": 123456789, "seed": 987654321, "limit": 55555, "val_size": 44444}
    names = {point_name({**point, "seed": s}) for s in range(100)}
    assert len(names) == 100 and all(len(n.encode()) <= 255 for n in names)


def test_values_that_print_alike_train_into_their_own_directories(tmp_path, no_test_set):
    out = tmp_path / "s"
    first = sweep("--out", out, "--lr", "0.1,0.1000001")
    assert first.exit_code == 0, first.output
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert sorted(json.loads((d / "metrics.json").read_text())["config"]["lr"] for d in dirs) == [0.1, 0.1000001]
    again = sweep("--out", out, "--lr", "0.1,0.1000001")
    assert again.exit_code == 0 and "2 finished already, 0 to run" in again.output, again.output


@pytest.mark.parametrize("args, fragment", [
    (["--lr", ",".join(str(0.001 * (i + 1)) for i in range(1000)), "--seed", ",".join(map(str, range(1000)))],
     "1,000,000 points, over the limit of 10,000"),
    (["--lr", "0.1,0.2", "--seed", ",".join(map(str, range(10_001)))], "10,001 values, over the limit"),
    (["--seed", ",".join(map(str, range(200))), "--lr", ",".join(str(0.01 * (i + 1)) for i in range(51))],
     "10,200 points"),
])
def test_a_grid_over_the_limit_is_refused_before_any_work(tmp_path, monkeypatch, args, fragment):
    monkeypatch.setattr(sweep_module, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    monkeypatch.setattr(sweep_module, "load_config", lambda *a, **k: pytest.fail("the points were made"))
    assert_one_line_and_no_folder(tmp_path, args, fragment)
