"""Model files: the same numbers across backends, wrong shapes and models that do not fit the data refused,
damaged, foreign or missing files reported in one clean line."""

import json

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.errors import GpunetError
from gpunet.core.model import MLP
from gpunet.runs.store import load_model, save_model
from helpers import cli


def test_model_file_round_trip_across_backends(backend, tmp_path):
    """Saved on `backend` (cuda too, when there is a GPU), loaded on cpu and on `backend`: the same numbers."""
    net = MLP(backend, (784, 32, 16, 10), seed=3)
    path = tmp_path / "model.npz"
    save_model(path, net, {"dataset": "mnist", "test_accuracy": 0.5})
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    expected = backend.to_numpy(net.predict_proba(backend.asarray(X)))
    for target in {"cpu": get_backend("cpu"), backend.name: backend}.values():
        loaded, header = load_model(path, target)
        assert loaded.sizes == (784, 32, 16, 10) and loaded.backend is target
        assert header["sizes"] == [784, 32, 16, 10] and header["test_accuracy"] == 0.5 and header["format"] == 1
        for k, v in net.state_dict().items():
            assert np.array_equal(target.to_numpy(loaded.params[k]), v)
        got = target.to_numpy(loaded.predict_proba(target.asarray(X)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_model_with_wrong_shapes_is_refused(tmp_path):
    meta = np.asarray(json.dumps({"format": 1, "kind": "model", "sizes": [784, 128, 10]}))
    bad = {"W1": np.zeros((784, 128), np.float32), "b1": np.zeros(64, np.float32),
           "W2": np.zeros((128, 10), np.float32), "b2": np.zeros(10, np.float32)}
    np.savez(tmp_path / "shapes.npz", meta=meta, **bad)
    with pytest.raises(GpunetError, match="shapes.npz: damaged model file: W1 .* and b1"):
        load_model(tmp_path / "shapes.npz", get_backend("cpu"))
    meta = np.asarray(json.dumps({"format": 1, "kind": "model", "sizes": [784, 64, 10]}))
    np.savez(tmp_path / "header.npz", meta=meta, **{**bad, "b1": np.zeros(128, np.float32)})
    with pytest.raises(GpunetError, match="header says"):
        load_model(tmp_path / "header.npz", get_backend("cpu"))


@pytest.mark.parametrize("sizes, fragment", [((100, 16, 10), "maps 100 inputs to 10 classes"),
                                             ((784, 16, 12), "maps 784 inputs to 12 classes")])
def test_model_that_does_not_fit_the_data_is_refused(tmp_path, sizes, fragment):
    net = MLP(get_backend("cpu"), sizes)
    save_model(tmp_path / "odd.npz", net, {"dataset": "mnist"})
    with pytest.raises(GpunetError, match=f"odd.npz: the model {fragment}; a gpunet model maps 784 pixels to the 10"):
        load_model(tmp_path / "odd.npz", get_backend("cpu"))


def test_damaged_or_foreign_files_get_one_clean_line(tmp_path, trained_run):
    damaged = tmp_path / "damaged.npz"
    data = (trained_run / "model.npz").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    for path, message in [(damaged, "not a readable gpunet model file"), (not_zip, "not a readable gpunet model"),
                          (trained_run / "checkpoint.npz", "checkpoint file, not a model file"),
                          (tmp_path / "missing.npz", "model file not found")]:
        result = cli("evaluate", path, "--device", "cpu")
        assert result.exit_code == 2, (path, result.output)
        assert result.output.strip().splitlines() == [f"error: {path}: " + result.output.split(f"{path}: ", 1)[1]
                                                       .strip()]
        assert message in result.output
