"""The dataset registry and the search path: which copy is used ($GPUNET_DATA, --data-dir, the repository, the
cache), what is reported about damaged ones, labels checked against the classes, and the bundled MNIST."""

import gzip
import hashlib
import json

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.data.load import load_dataset
from gpunet.data.datasets import DATASETS, DataFile, Dataset, class_names
from gpunet.errors import GpunetError
from gpunet.data.locate import cache_dir, locate, read_copy
from gpunet.runs.store import load_model
from helpers import cli, closed_port, corrupt, idx_bytes, place, quiet, register

pytestmark = pytest.mark.usefixtures("isolated")


def test_gpunet_data_beats_the_cache_and_a_corrupt_earlier_copy_is_reported(tmp_path, monkeypatch, tiny):
    ds = register(monkeypatch, tiny, [f"http://127.0.0.1:{closed_port()}/"])
    place(cache_dir("tiny"), tiny)
    place(tmp_path / "root" / "tiny", tiny)
    monkeypatch.setenv("GPUNET_DATA", str(tmp_path / "root"))
    found, _ = locate(ds)
    assert found.where == "$GPUNET_DATA" and found.folder == tmp_path / "root" / "tiny"

    flip = lambda name, raw: corrupt(raw) if name == "train-images-idx3-ubyte" else raw  # noqa: E731
    place(tmp_path / "root" / "tiny", tiny, flip)
    console = quiet()
    train, _ = load_dataset("tiny", console=console)
    assert np.array_equal(train.images, read_copy(ds, cache_dir("tiny"))[0].images)  # the cache's copy was used
    warning = console.file.getvalue()
    assert str(tmp_path / "root" / "tiny" / "train-images-idx3-ubyte.gz") in warning and "SHA-256" in warning

    truncated = place(tmp_path / "root" / "tiny", tiny) / "t10k-labels-idx1-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:-6])
    found, seen = locate(ds)
    assert found.where == "cache" and str(truncated) in seen[0].problem


def test_data_dir_comes_first_and_is_reported_when_empty(tmp_path, monkeypatch, tiny):
    ds = register(monkeypatch, tiny, [])
    place(tmp_path / "mine", tiny)
    assert locate(ds, tmp_path / "mine")[0].where == "--data-dir"
    place(cache_dir("tiny"), tiny)
    warnings = []
    (tmp_path / "empty").mkdir()
    found, _ = locate(ds, tmp_path / "empty", warnings.append)
    assert found.where == "cache" and "--data-dir" in warnings[0] and str(tmp_path / "empty") in warnings[0]
    with pytest.raises(GpunetError, match=r"--data-dir .*typo: no such folder"):
        locate(ds, tmp_path / "typo")


def test_bundled_mnist_passes_gpunet_data_verify():
    result = cli("data", "verify", "mnist")
    assert result.exit_code == 0, result.output
    assert "ok   mnist: repository" in result.output and "data/mnist" in result.output


def test_train_on_fashion_mnist_records_dataset_and_class_names(tmp_path, monkeypatch, tiny):
    register(monkeypatch, tiny, [], name="fashion-mnist")
    place(tmp_path / "files", tiny)
    run = tmp_path / "run"
    result = cli("train", "--device", "cpu", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "files",
                 "--epochs", "1", "--batch-size", "4", "--no-plots", "--val-size", "2", "--out", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["dataset"] == "fashion-mnist"
    _, header = load_model(run / "model.npz", get_backend("cpu"))
    assert header["dataset"] == "fashion-mnist" and header["classes"] == list("abcdefghij")  # the registry's names


def test_registry_entries_are_complete():
    assert class_names("fashion-mnist")[9] == "Ankle boot" and class_names("mnist") == list("0123456789")
    for ds in DATASETS.values():
        assert len(ds.classes) == 10 and len(ds.files) == 4 and ds.mirrors
        assert not any("yann.lecun.com" in url for f in ds.files for url in ds.urls(f))
        assert all(len(f.sha256) == len(f.gz_sha256) == 64 and f.gz_size > 0 for f in ds.files)


def test_label_out_of_range_is_refused(tmp_path, rng):
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "train-labels-idx1-ubyte": np.array([1, 12, 3]),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (1, 28, 28)),
              "t10k-labels-idx1-ubyte": np.array([0])}
    files = []
    for name, a in arrays.items():
        raw = idx_bytes(a)
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(raw))
        files.append(DataFile(name, "", 0, hashlib.sha256(raw).hexdigest()))
    ds = Dataset("digits", "test digits", tuple("0123456789"), (), tuple(files))
    with pytest.raises(GpunetError, match=r"train-labels-idx1-ubyte\.gz: label 12 is out of range 0\.\.9"):
        read_copy(ds, tmp_path)


def test_bundled_mnist_matches_known_facts(mnist):
    train, test = mnist
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == np.uint8
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
