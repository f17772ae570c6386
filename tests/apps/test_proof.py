"""`gpunet check --full`, the proof for a new GPU machine: its rows on cuda (the real GPU or the stand-in), and a
step that breaks is one FAIL row, with its error, while the others still run and the exit code is 1."""

import json

import gpunet.apps.proof
from helpers import cli

FULL = ["2 epochs of train on cuda vs cpu (weights)", "2 epochs of train as a CUDA graph vs eager (weights)",
        "1 epoch, resumed to 2 vs 2 straight (weights)", "evaluate the saved model vs its training metrics (accuracy)",
        "one serve request vs the model on cpu float64 (probabilities)",
        "bench: 1 epoch of gpunet's step vs the plain one (loss)"]


def check_full(*args):
    return cli("check", "--device", "cuda", "--full", "--seconds", "0", "--samples", "128", *args)


def test_full_check_passes_on_cuda(gpu):
    result = check_full("--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["checks"]
    assert [r["name"] for r in rows[-len(FULL):]] == FULL
    assert all(r["passed"] and r["error"] is None for r in rows), rows
    assert rows[-4]["value"] == 0 and rows[-3]["value"] == 0  # a resume and evaluate are exact


def test_a_failing_step_is_one_fail_row_and_the_rest_still_run(standin, monkeypatch):
    def no_server(backend, run):
        raise OSError("address in use")

    monkeypatch.setattr(gpunet.apps.proof, "serve_request", no_server)
    result = check_full()
    assert result.exit_code == 1
    assert "one serve request vs the model on cpu float64 (probabilities): OSError: address in use" in result.stdout
    fails = [line for line in result.stdout.splitlines() if line.endswith("FAIL")]
    assert len(fails) == 1 and fails[0].split()[:3] == ["one", "serve", "request"] and "error" in fails[0]
    assert "bench: 1 epoch of gpunet's step vs the plain one (loss)" in result.stdout
    assert result.stderr.strip() == "FAIL: one serve request vs the model on cpu float64 (probabilities): error " \
                                    "(tolerance 0.0001)"
