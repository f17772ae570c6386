"""Every command on the strict device (tests/strict.py): no implicit host transfer anywhere, no sync inside a
training step, and the same results as the CPU. `--device cuda` is routed to the strict device by patching
get_backend where the commands look it up."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import gpunet.core.backend
import gpunet.bench.run
import gpunet.bench.whole
import gpunet.apps.check
import gpunet.runs.plots
from gpunet.apps.cli import app
from gpunet.core.step import TrainStep
from devices.strict import StrictArray, StrictBackend

runner = CliRunner()
REAL_GET_BACKEND = gpunet.core.backend.get_backend


def cli(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


class Strict:
    """The strict devices a test made, and the training steps that read the device."""

    def __init__(self):
        self.backends: list[StrictBackend] = []
        self.steps = 0
        self.step_reads: list[str] = []

    def get_backend(self, device="auto", dtype="float32"):
        if device == "cpu":
            return REAL_GET_BACKEND(device, dtype)
        self.backends.append(StrictBackend(dtype))
        return self.backends[-1]

    def assert_clean(self, steps=True):
        """Something ran on the strict device (training steps too, unless `steps` is False), nothing was converted
        implicitly, and nothing read the device but `to_numpy`: no step, and no command either."""
        assert self.backends and (self.steps or not steps), "nothing ran on the strict device"
        refused = [r for b in self.backends for r in b.ledger.refused]
        assert not refused, refused
        assert not self.step_reads, self.step_reads
        assert self.syncs == 0, f"{self.syncs} implicit device reads (float(), int(), bool(), .item() ...)"

    @property
    def syncs(self):
        return sum(b.ledger.syncs for b in self.backends)


@pytest.fixture
def strict(monkeypatch):
    """Route --device cuda/auto to fresh strict devices; check the device reads of every TrainStep call."""
    s = Strict()
    for module in (gpunet.core.backend, gpunet.bench.run, gpunet.bench.whole, gpunet.apps.check, gpunet.runs.plots):
        monkeypatch.setattr(module, "get_backend", s.get_backend)
    call = TrainStep.__call__

    def checked_call(self, idx, lr):
        ledger = getattr(self.backend, "ledger", None)
        if ledger is None:
            return call(self, idx, lr)
        s.steps += 1
        before = (ledger.syncs, ledger.gets)
        call(self, idx, lr)
        if (ledger.syncs, ledger.gets) != before:
            s.step_reads.append(f"step {s.steps}: {ledger.syncs - before[0]} syncs, {ledger.gets - before[1]} gets")

    monkeypatch.setattr(TrainStep, "__call__", checked_call)
    return s


# --- the strict device itself --------------------------------------------------------------------------


def test_strict_arrays_refuse_implicit_conversion_and_count_reads():
    b = StrictBackend()
    a = b.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError):
        np.asarray(a)
    with pytest.raises(TypeError):
        np.exp(a)  # a NumPy ufunc
    with pytest.raises(TypeError):
        np.stack([a, a])  # a NumPy function
    with pytest.raises(TypeError):
        a + np.ones(3)  # a host array into a device operation
    with pytest.raises(TypeError):
        b.xp.matmul(np.ones((3, 2)), a)
    assert len(b.ledger.refused) == 5
    assert b.ledger.syncs == 0
    total = a.sum()
    assert isinstance(total, StrictArray) and total.shape == ()  # a reduction stays on the device
    assert float(total) == 15 and int(a[1, 2]) == 5 and bool(a[0, 1]) and a[1, 0].item() == 3
    assert b.ledger.syncs == 4
    np.testing.assert_array_equal(b.to_numpy(a * 2), np.arange(6.0).reshape(2, 3) * 2)
    assert b.ledger.gets == 1 and b.ledger.syncs == 4


def test_strict_capture_replays_the_recorded_operations_only():
    """As a CUDA graph: nothing runs at capture, a replay reruns the operations on the same arrays, a Python
    value read at capture stays frozen, and a device read during capture is an error."""
    b = StrictBackend()
    x, scale = b.asarray(np.ones(3)), b.asarray(np.asarray(2.0))
    host = {"add": 1.0}
    replay = b.capture(lambda: (x.__imul__(scale), x.__iadd__(host["add"])))
    np.testing.assert_array_equal(b.to_numpy(x), [1, 1, 1])  # not run at capture
    scale.fill(3)
    host["add"] = 100.0
    replay()
    np.testing.assert_array_equal(b.to_numpy(x), [4, 4, 4])  # 1 * 3 + 1: the device scalar is read, the float not
    with pytest.raises(RuntimeError, match="graph capture"):
        b.capture(lambda: float(x.sum()))


def test_strict_graph_steps_equal_eager_ones(strict):
    from gpunet.apps.check import STEPS, train_steps

    backend = strict.get_backend("cuda")
    eager, graph = train_steps(backend, "adam"), train_steps(backend, "adam", graph=True)
    for k in eager:
        np.testing.assert_array_equal(graph[k], eager[k], err_msg=k)
    assert strict.steps == 2 * STEPS
    strict.assert_clean()


# --- every command on it ---------------------------------------------------------------------------


def history(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """One epoch on 1,000 digits, resumed for a second one, on the CPU, on as many BLAS threads as NumPy's pool
    has: the strict device's NumPy runs on those (a GPU leaves the pool as set), and OpenBLAS's sums depend on
    the count."""
    from threadpoolctl import ThreadpoolController

    from gpunet.core.threads import numpy_pools

    threads = numpy_pools(ThreadpoolController().select(user_api="blas"))[0][0].num_threads
    out = tmp_path_factory.mktemp("cpu") / "run"
    result = cli("train", "--device", "cpu", "--epochs", 1, "--limit", 1000, "--batch-size", 100, "--no-plots",
                 "--out", out, "--threads", threads)
    assert result.exit_code == 0, result.output
    result = cli("train", "--device", "cpu", "--resume", out, "--epochs", 2, "--no-plots", "--threads", threads)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("graph", ["0", "1"])
def test_train_and_resume_on_the_strict_device_match_the_cpu(strict, cpu_run, tmp_path, graph):
    out = tmp_path / "run"
    env = {"GPUNET_CUDA_GRAPH": graph}
    first = cli("train", "--device", "cuda", "--epochs", 1, "--limit", 1000, "--batch-size", 100, "--no-plots",
                "--out", out, env=env)
    assert first.exit_code == 0, first.output
    resumed = cli("train", "--device", "cuda", "--resume", out, "--epochs", 2, "--no-plots", env=env)
    assert resumed.exit_code == 0, resumed.output
    assert history(out) == history(cpu_run)  # the strict device computes with NumPy: the same numbers
    assert strict.steps == 20
    strict.assert_clean()


def test_evaluate_predict_and_plot_on_the_strict_device(strict, cpu_run, tmp_path, mnist):
    want = cli("evaluate", cpu_run, "--device", "cpu", "--json")
    got = cli("evaluate", cpu_run, "--device", "cuda", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["confusion"] == json.loads(want.stdout)["confusion"]
    digits = mnist[1].images[:3]
    paths = []
    for i, digit in enumerate(digits):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(255 - digit).resize((56, 56)).save(paths[-1])
    want = cli("predict", cpu_run, *paths, "--device", "cpu", "--json")
    got = cli("predict", cpu_run, *paths, "--device", "cuda", "--json")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout) == json.loads(want.stdout)
    strict_run = tmp_path / "strict-run"
    trained = cli("train", "--device", "cuda", "--epochs", 1, "--limit", 500, "--out", strict_run)  # plots too
    assert trained.exit_code == 0, trained.output
    (strict_run / "curves.png").unlink()
    plotted = cli("plot", strict_run)
    assert plotted.exit_code == 0, plotted.output
    assert (strict_run / "curves.png").stat().st_size > 0
    strict.assert_clean()


def test_serve_predicts_on_the_strict_device(strict, cpu_run, mnist):
    from fastapi.testclient import TestClient

    from gpunet.apps.serve import create_app, describe_model
    from gpunet.runs.store import load_model

    pixels = (mnist[1].images[0] / 255).tolist()
    answers = {}
    for device in ("cpu", "cuda"):
        net, header = load_model(cpu_run, gpunet.core.backend.get_backend(device))
        app = create_app(net, describe_model(cpu_run, net, header))
        with TestClient(app, base_url="http://localhost") as client:  # a Host the server answers to
            response = client.post("/api/predict", json={"pixels": pixels})
        assert response.status_code == 200, response.text
        answers[device] = response.json()
    assert answers["cuda"] == answers["cpu"]
    strict.assert_clean(steps=False)


@pytest.mark.parametrize("graph", [[], ["--cuda-graph"]])
def test_bench_contenders_on_the_strict_device(strict, tmp_path, graph):
    report = tmp_path / "bench.json"
    result = cli("bench", "--device", "cuda", "--contenders", "gpunet,numpy", "--batch-sizes", "64,full",
                 "--epochs", 1, "--limit", 256, "--no-memory", *graph, "--json", report)
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["results"]
    assert {(r["batch"], r["contender"]) for r in rows} == {(b, c) for b in (64, "full") for c in ("gpunet", "numpy")}
    strict.assert_clean()


def test_check_passes_on_the_strict_device(strict):
    result = cli("check", "--device", "cuda", "--json", "--seconds", 0.05, "--samples", 512)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    names = [r["name"] for r in report["checks"]]
    assert any("CUDA graph" in n for n in names) and all(r["passed"] for r in report["checks"])
    assert report["speed"]["batch_128"] > 0 and report["speed"]["full_batch"] > 0
    strict.assert_clean()


def test_check_fails_on_a_device_that_computes_wrong(strict, monkeypatch):
    """A device whose exp is off by 0.001: its float32 gradients and its steps leave the CPU's; exit 1, rows named."""
    from devices.strict import op

    def broken(device="auto", dtype="float32"):
        backend = strict.get_backend(device, dtype)
        if device != "cpu":
            exp = lambda a, out=None: np.add(np.exp(a, out=out), 1e-3, out=out)  # noqa: E731
            backend.xp.exp = lambda a, out=None: op(backend.ledger, exp, (a,), {"out": out})
        return backend

    monkeypatch.setattr(gpunet.apps.check, "get_backend", broken)
    result = cli("check", "--device", "cuda", "--seconds", 0.05, "--samples", 512)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAIL: ")]
    assert any("float32 gradients" in line for line in failed) and any("vs cpu float64" in line for line in failed)
    assert "checks FAILED" in result.stdout


def test_check_on_the_cpu_passes_and_prints_every_row():
    result = cli("check", "--device", "cpu", "--seconds", 0.05, "--samples", 512)
    assert result.exit_code == 0, result.output
    for fragment in ("blas", "dW1 vs central differences (float64, cpu)", "float32 gradients on cpu",
                     "20 steps on cpu float32 vs cpu float64", "CUDA-graph replay: not checked", "samples/s at batch 128",
                     "all 6 checks passed"):
        assert fragment in result.stdout


def test_check_speed_line_on_the_threads_asked():
    result = cli("check", "--device", "cpu", "--seconds", 0.05, "--samples", 512, "--threads", 1, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["speed"]["threads"] == {"batch_128": "1", "full_batch": "1"}
    auto = cli("check", "--device", "cpu", "--seconds", 0.05, "--samples", 512)
    assert "BLAS threads auto: " in auto.stdout
    bad = cli("check", "--device", "cpu", "--threads", "all")
    assert bad.exit_code == 2 and bad.stderr.strip().startswith("error: --threads 'all'")


def test_check_cuda_without_a_gpu_is_one_clean_line(monkeypatch):
    from gpunet.errors import GpunetError

    def no_gpu(device="auto", dtype="float32"):
        if device == "cuda":
            raise GpunetError("CuPy is not installed, so --device cuda cannot run: pip install -e '.[cuda12]'")
        return REAL_GET_BACKEND(device, dtype)

    monkeypatch.setattr(gpunet.apps.check, "get_backend", no_gpu)
    result = cli("check", "--device", "cuda")
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: CuPy is not installed") and "Traceback" not in result.output


def test_check_passes_on_the_gpu(gpu):
    result = cli("check", "--device", "cuda", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert any("CUDA graph" in r["name"] for r in report["checks"]) and "gpu" in report["environment"]


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_estimator_on_the_strict_device(strict, monkeypatch):
    """MLPClassifier(device="cuda") fits and predicts with no implicit transfer and no sync, as on the CPU."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    import gpunet.sklearn.estimator

    monkeypatch.setattr(gpunet.sklearn.estimator, "get_backend", strict.get_backend)
    X, y = load_digits(return_X_y=True)
    X = X / 16
    params = dict(max_iter=5, random_state=0, batch_size=64)
    on_strict = gpunet.sklearn.estimator.MLPClassifier(device="cuda", **params).fit(X, y)
    on_cpu = gpunet.sklearn.estimator.MLPClassifier(device="cpu", **params).fit(X, y)
    proba = on_strict.predict_proba(X)
    strict.assert_clean()
    assert isinstance(proba, np.ndarray) and on_strict.score(X, y) > 0.9
    np.testing.assert_allclose(proba, on_cpu.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(on_strict.loss_curve_, on_cpu.loss_curve_, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
@pytest.mark.parametrize("kind", ["binary", "multilabel", "regression"])
def test_estimator_outputs_on_the_strict_device(strict, monkeypatch, kind):
    """The logistic and identity outputs, tanh, SGD with Nesterov, alpha and early stopping: no implicit transfer
    and no sync, and the CPU's fit."""
    pytest.importorskip("sklearn")
    import gpunet.sklearn.estimator as est

    monkeypatch.setattr(est, "get_backend", strict.get_backend)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    y = {"binary": X[:, 0] > 0, "multilabel": (X[:, :3] > 0).astype(int), "regression": X[:, 0] - X[:, 1]}[kind]
    Estimator = est.MLPRegressor if kind == "regression" else est.MLPClassifier
    params = dict(hidden_layer_sizes=(8,), activation="tanh", solver="sgd", alpha=1e-3, early_stopping=True,
                  max_iter=4, random_state=0, batch_size=32)
    on_strict = Estimator(device="cuda", **params).fit(X, y)
    on_cpu = Estimator(device="cpu", **params).fit(X, y)
    out = on_strict.predict(X)
    strict.assert_clean()
    np.testing.assert_allclose(on_strict.loss_curve_, on_cpu.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(out, on_cpu.predict(X), atol=1e-8)
