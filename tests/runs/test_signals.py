"""SIGTERM (what `kill`, systemd and container runtimes send) stops `gpunet train` like the first Ctrl-C: a
checkpoint after the current step, exit code 143, and `--resume` continues the run."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from gpunet.core.backend import get_backend
from gpunet.runs.store import load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120  # seconds: generous, for a shared machine


def test_sigterm_checkpoints_exits_143_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "gpunet", "train", "--device", "cpu", "--epochs", "1000", "--limit", "1000",
           "--batch-size", "10", "--no-plots", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + WAIT
    while not any(line.startswith("training 784-128-10") for line in said):
        assert proc.poll() is None, said
        assert time.monotonic() < deadline, f"training did not start: {said}"
        time.sleep(0.05)
    time.sleep(1.0)  # some steps in
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT)
    reader.join(timeout=WAIT)
    stderr = "".join(said)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "interrupted (SIGTERM)" in stderr and f"gpunet train --resume {out}" in stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["signal"] == "SIGTERM"
    ckpt = load_checkpoint(out / "checkpoint.npz")
    done = ckpt.meta["epoch"] + (ckpt.meta["step"] > 0)
    assert done >= 1 and ckpt.meta["epoch"] < 1000

    resumed = subprocess.run([sys.executable, "-m", "gpunet", "train", "--resume", str(out), "--epochs",
                              str(done + 1), "--no-plots"], capture_output=True, text=True, env=env, timeout=WAIT)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch {ckpt.meta['epoch'] + 1}" in resumed.stderr
    net, header = load_model(out / "model.npz", get_backend("cpu"))
    assert 1 <= header["best_epoch"] <= done + 1  # model.npz holds the best epoch on validation
    assert all(np.isfinite(v).all() for v in net.params.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and len(metrics["history"]) == done + 1
