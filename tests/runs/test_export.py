"""ONNX export: the graph onnxruntime runs gives gpunet's probabilities (within 1e-5) and top classes."""

import json
import sys
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from gpunet.core.backend import get_backend  # noqa: E402
from gpunet.apps.cli import app  # noqa: E402
from gpunet.data.load import to_features  # noqa: E402
from gpunet.data.datasets import class_names  # noqa: E402
from gpunet.runs.export import INPUT, OPSET, OUTPUT, save_onnx, to_onnx  # noqa: E402
from gpunet.core.model import MLP  # noqa: E402
from gpunet.runs.store import load_model  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def test_images(mnist):
    return to_features(mnist[1].images[:1000])  # (1000, 784) float32 in [0, 1]


@pytest.fixture(scope="module")
def model_file(trained_run):
    """The session's trained model.npz (tests/conftest.py)."""
    return trained_run / "model.npz"


def run_onnx(path, X):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], {INPUT: X})[0]


def test_graph_structure_and_metadata():
    net = MLP(get_backend("cpu"), (784, 64, 32, 10), seed=1)
    model = to_onnx(net.state_dict(), class_names("mnist"), {"input_scale": "x / 255"})
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == class_names("mnist") and props["input_scale"] == "x / 255"
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == INPUT and dims == ["N", 784]
    with pytest.raises(ValueError, match="3 class names"):
        to_onnx(net.state_dict(), ["a", "b", "c"])


@pytest.mark.parametrize("sizes", [(784, 128, 10), (784, 64, 32, 10)])
def test_onnxruntime_matches_gpunet_on_1000_test_images(tmp_path, test_images, sizes):
    net = MLP(get_backend("cpu"), sizes, seed=2)  # random weights: every layer matters
    path = tmp_path / "net.onnx"
    save_onnx(path, net.state_dict(), class_names("mnist"))
    P = run_onnx(path, test_images)
    expected = net.predict_proba(test_images)
    assert P.shape == (1000, 10)
    np.testing.assert_allclose(P, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(P.argmax(axis=1), expected.argmax(axis=1))


def test_cli_export_of_a_trained_model(tmp_path, model_file, test_images):
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(model_file), "--onnx", str(out)])
    assert result.exit_code == 0, result.output
    assert f"opset {OPSET}" in result.stdout and out.exists()
    net, header = load_model(model_file, get_backend("cpu"))
    P = run_onnx(out, test_images)
    expected = net.predict_proba(test_images)
    np.testing.assert_allclose(P, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(P.argmax(axis=1), expected.argmax(axis=1))
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["classes"]) == header["classes"] and props["dataset"] == "mnist"


def test_cli_export_errors(tmp_path, model_file, monkeypatch):
    result = runner.invoke(app, ["export", str(tmp_path / "missing.npz"), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "not found" in result.stderr
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the onnx extra were not installed
    result = runner.invoke(app, ["export", str(model_file), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: ONNX export needs the onnx package: pip install 'gpunet[onnx]'"
    assert "Traceback" not in result.output and not (tmp_path / "m.onnx").exists()


def test_estimator_exports_the_same_way(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_iris

    from gpunet import MLPClassifier

    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.05, max_iter=40, tol=0, random_state=0,
                        device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 40 epochs are few, and enough here
        clf.fit(X, labels)
    path = tmp_path / "iris.onnx"
    clf.export_onnx(path)
    P = run_onnx(path, X.astype(np.float32))
    np.testing.assert_allclose(P, clf.predict_proba(X), atol=1e-5, rtol=0)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    classes = json.loads(props["classes"])
    assert classes == list(clf.classes_)
    np.testing.assert_array_equal(np.array(classes)[P.argmax(axis=1)], clf.predict(X))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("target", ["multiclass", "binary", "multilabel", "regression"])
def test_estimator_exports_every_activation_and_output(tmp_path, activation, target):
    """onnxruntime computes from the exported graph what predict_proba (predict for the regressor) returns."""
    pytest.importorskip("sklearn")
    from gpunet import MLPClassifier, MLPRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = {"multiclass": X[:, 0].round().clip(-1, 1).astype(int), "binary": X[:, 0] > 0,
         "multilabel": (X[:, :3] > 0).astype(int), "regression": X[:, 0] - X[:, 1]}[target]
    Estimator = MLPRegressor if target == "regression" else MLPClassifier
    est = Estimator(hidden_layer_sizes=(8, 5), activation=activation, max_iter=5, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 5 epochs
        est.fit(X, y)
    path = tmp_path / "m.onnx"
    est.export_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: X.astype(np.float32)})[0]
    expected = est.predict(X) if target == "regression" else est.predict_proba(X)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    hidden = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": "Identity"}[activation]
    assert ops[1] == ops[3] == hidden and session.get_outputs()[0].name == (
        "predictions" if target == "regression" else OUTPUT)
