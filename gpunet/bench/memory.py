"""`python -m gpunet.bench.memory ARGS_JSON`: the subprocess side of `timing.peak_memory`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpunet.core.backend import get_backend
from gpunet.bench.contenders import load_data
from gpunet.bench.run import runner_class
from gpunet.bench.timing import rss_peak_mib
from gpunet.runs.config import batch_rows
from gpunet.core.model import MLP


def memory_child(args_json: str) -> None:
    """The subprocess side of `peak_memory`: prints {"train": MiB, "process": MiB}."""
    a = json.loads(args_json)
    backend = get_backend(a["device"])
    data = load_data(backend, a["limit"])
    B = batch_rows(a["batch"], data.m)
    runner = runner_class(a["name"])(backend, data, B, MLP(backend, seed=0).state_dict(), a["graph"])
    out: dict[str, float] = {}
    if backend.name == "cpu":
        out["process"] = rss_peak_mib()
        Path("/proc/self/clear_refs").write_text("5")  # Linux: restart VmHWM from the current RSS
    for e in range(3):
        runner.epoch(e)
    out["train"] = runner.peak_device_bytes() / 2**20 if backend.name == "cuda" else rss_peak_mib()
    if backend.name == "cpu":
        out["process"] = max(out["process"], out["train"])
    print(json.dumps({k: round(v, 1) for k, v in out.items()}))


if __name__ == "__main__":
    memory_child(sys.argv[1])
