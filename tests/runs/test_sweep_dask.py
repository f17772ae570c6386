"""`gpunet sweep --scheduler`: the points on a real Dask cluster (a `dask scheduler` and two `dask worker`
processes on 127.0.0.1), their results written here, a worker killed mid-sweep, the same figures as a local sweep,
and a point that cannot run named in the output."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import gpunet
from gpunet.errors import GpunetError
from gpunet.install import pip_extra
from gpunet.runs import sweep as sweep_module
from gpunet.runs.store import load_model
from gpunet.core.backend import get_backend
from gpunet.runs.sweep import point_name, run_sweep
from helpers import assert_clean_error, assert_point_files, cli

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="Dask's distributed is not installed (pip install 'gpunet[dask]')")
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
WAIT = 120  # seconds: the most any step of these tests may wait for the cluster (a shared CI machine is slow)
GRID = {"epochs": [2], "lr": [0.05, 0.2], "seed": [0, 1, 2], "limit": [4000], "val_size": [500]}
FLAGS = ("--device", "cpu", "--epochs", "2", "--lr", "0.05,0.2", "--limit", "4000", "--val-size", "500")


def dask(*args, log, env):
    return subprocess.Popen([sys.executable, "-m", "dask", *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                            env=env)


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two workers (one thread and one BLAS thread each; no nanny, so a killed worker stays
    dead), each finding MNIST on its own: (a client, {worker address: its process})."""
    distributed = pytest.importorskip("distributed")
    env = {**os.environ, **ONE_THREAD,
           "PYTHONPATH": os.pathsep.join([str(Path(gpunet.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "w")
    procs = [dask("scheduler", "--host", "127.0.0.1", "--port", 0, "--no-dashboard", "--scheduler-file", file,
                  log=log, env=env)]
    try:
        workers = [dask("worker", "--scheduler-file", file, "--host", "127.0.0.1", "--nthreads", 1, "--no-nanny",
                        "--no-dashboard", "--local-directory", tmp_path / "dask", log=log, env=env) for _ in range(2)]
        procs += workers
        deadline = time.monotonic() + WAIT
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        with distributed.Client(scheduler_file=str(file), timeout=WAIT) as client:
            client.wait_for_workers(2, timeout=WAIT)
            pids = client.run(os.getpid)  # worker address -> its pid
            yield client, {address: next(p for p in workers if p.pid == pid) for address, pid in pids.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait()
        log.close()


def figures(run_dir: Path) -> tuple:
    """A point's validation figures, its history and its kept model's weights."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    net, _ = load_model(run_dir / "model.npz", get_backend("cpu"))
    return (metrics["val_accuracy"], metrics["val_loss"], metrics["best_epoch"],
            [{k: v for k, v in row.items() if k != "seconds"} for row in metrics["history"]],
            [p.tobytes() for p in net.state_dict().values()])


@needs_dask
def test_a_killed_worker_costs_one_retry_and_the_figures_equal_a_local_sweep(tmp_path, cluster, mnist, monkeypatch):
    client, workers = cluster
    address = client.scheduler.address
    lines: list[str] = []
    outcome: dict = {}

    def remote():
        try:
            outcome["result"] = run_sweep(None, GRID, tmp_path / "remote", scheduler=address, say=lines.append)
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=remote)
    thread.start()
    # Once a point has come back (the workers have their data), kill the first worker seen running one.
    victim = None
    deadline = time.monotonic() + WAIT
    while victim is None and thread.is_alive() and time.monotonic() < deadline:
        if any(line.startswith("[1/") for line in lines):
            victim = next((w for w, keys in client.processing().items() if keys), None)
        time.sleep(0.01)
    assert victim is not None, f"no worker was seen running a point: {lines}"
    workers[victim].send_signal(signal.SIGKILL)
    thread.join(WAIT)
    assert not thread.is_alive() and "error" not in outcome, (lines, outcome)
    assert workers[victim].wait(WAIT) == -signal.SIGKILL
    assert list(client.scheduler_info()["workers"]) == [w for w in workers if w != victim]
    # On the cluster: each point computed to the end once; the killed one was run again, nothing else was (a
    # point's result is released once it is written here, so the dead worker held none).
    moves = client.run_on_scheduler(lambda dask_scheduler: [(str(t[0]), t[2]) for t in dask_scheduler.transition_log])
    computed = [key for key, state in moves if state == "memory"]
    assert len(computed) == len(set(computed)) == 6, moves
    assert len([key for key, state in moves if state == "processing"]) > 6, moves

    # Every point finished, exactly once, written here; sweep.json and its table made here.
    result = outcome["result"]
    names = [point_name(p) for p in sweep_module.expand_grid(GRID)]
    assert result["status"] == "completed" and not result["failed"]
    assert sorted(point_name(p["point"]) for p in result["points"]) == sorted(names)
    assert [line.split(" ")[0] for line in lines[1:]] == [f"[{k}/6]" for k in range(1, 7)], lines
    assert f"on the Dask cluster at {address}" in lines[0]
    remote_dir = tmp_path / "remote"
    assert len(json.loads((remote_dir / "sweep.json").read_text())) == 6 and (remote_dir / "sweep.png").exists()
    for name in names:
        assert_point_files(remote_dir / name)  # drawn on the worker, written here

    # The same sweep run here, one point after another with one BLAS thread: the same figures, bit for bit.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(sweep_module, "load_dataset", lambda *args, **kwargs: mnist)
    with threadpoolctl.threadpool_limits(1):
        run_sweep(None, GRID, tmp_path / "local", say=lambda line: None)
    for name in names:
        assert figures(remote_dir / name) == figures(tmp_path / "local" / name), name

    # Through the CLI: the same command skips every finished point; a wider grid runs only the new ones there.
    again = cli("sweep", *FLAGS, "--seed", "0,1,2", "--out", remote_dir, "--scheduler", address)
    assert again.exit_code == 0 and "6 finished already, 0 to run" in again.stdout, again.output
    wider = cli("sweep", *FLAGS, "--seed", "0,1,2,3", "--out", remote_dir, "--scheduler", address, "--no-plots")
    assert wider.exit_code == 0, wider.output
    assert f"6 finished already, 2 to run on the Dask cluster at {address}" in wider.stdout
    assert len(json.loads((remote_dir / "sweep.json").read_text())) == 8
    assert not (remote_dir / "sweep.png").exists()  # it would show 6 of the 8 points
    for name in names:
        assert_point_files(remote_dir / name)  # finished points are kept as they were
    for lr in ("0.05", "0.2"):
        new = remote_dir / f"epochs=2_lr={lr}_seed=3_limit=4000_val_size=500"
        assert_point_files(new, curves=False)


@needs_dask
def test_a_point_that_cannot_load_its_data_is_named_and_the_sweep_fails_cleanly(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")

    def nowhere(*args, **kwargs):
        raise GpunetError("mnist is not on this machine and could not be downloaded")

    monkeypatch.setattr(sweep_module, "load_dataset", nowhere)
    sweep_module._worker_split.cache_clear()  # the in-process workers below read their data afresh
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                      dashboard_address=None) as local:
            result = cli("sweep", "--device", "cpu", "--lr", "0.1,0.2", "--limit", "300", "--val-size", "500",
                         "--epochs", "1", "--out", tmp_path / "s", "--scheduler", local.scheduler_address)
    finally:
        sweep_module._worker_split.cache_clear()
    assert_clean_error(result, "2 points could not run (epochs=1_lr=0.1_", "lr=0.2_", "errors are above")
    for lr in ("0.1", "0.2"):
        assert f"[failed] epochs=1_lr={lr}_limit=300_val_size=500: error: mnist is not on this machine" \
            in result.stdout, result.stdout
    assert json.loads((tmp_path / "s" / "sweep.json").read_text()) == []
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["sweep.csv", "sweep.json"]


def test_workers_and_scheduler_together_are_one_line(tmp_path):
    result = cli("sweep", "--lr", "0.1,0.2", "--out", tmp_path / "s", "--scheduler", "tcp://127.0.0.1:9",
                 "--workers", "2")
    assert_clean_error(result, "--workers 2 with --scheduler: give one of them")
    assert not (tmp_path / "s").exists()


@needs_dask
def test_an_unreachable_scheduler_is_one_line(tmp_path):
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = cli("sweep", "--lr", "0.1,0.2", "--out", tmp_path / "s", "--scheduler", "tcp://127.0.0.1:9")
    assert_clean_error(result, "--scheduler tcp://127.0.0.1:9: cannot connect to a Dask scheduler there",
                       "start one with `dask scheduler`")
    assert not (tmp_path / "s").exists()  # refused before the folder is made


def test_scheduler_without_distributed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails as if it were not installed
    result = cli("sweep", "--lr", "0.1,0.2", "--out", tmp_path / "s", "--scheduler", "tcp://127.0.0.1:9")
    assert_clean_error(result, f"--scheduler needs Dask's distributed: {pip_extra('dask')}")
    assert not (tmp_path / "s").exists()
