"""The IDX reader on bytes the tests make, and the bundled MNIST against known facts."""

import gzip
import hashlib
import struct

import numpy as np
import pytest

from gpunet.data import load_mnist
from gpunet.datasets import DataFile, Dataset
from gpunet.idx import parse_idx, read_idx
from gpunet.locate import read_copy
from gpunet.errors import GpunetError


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def test_parse_good_images_and_labels(rng):
    images = rng.integers(0, 256, (3, 28, 28)).astype(np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(images), "x"), images)
    labels = np.array([5, 0, 4], dtype=np.uint8)
    assert np.array_equal(parse_idx(idx_bytes(labels), "x"), labels)


@pytest.mark.parametrize("cut", [1, 100, 28 * 28 * 3 - 1])
def test_truncated_file_is_refused(rng, cut):
    raw = idx_bytes(rng.integers(0, 256, (3, 28, 28)))
    with pytest.raises(GpunetError, match="truncated"):
        parse_idx(raw[:-cut], "images.idx")


def test_wrong_magic_is_refused():
    raw = idx_bytes(np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(GpunetError, match="magic"):
        parse_idx(b"\x00\x00\x0d" + raw[3:], "floats.idx")  # 0x0d = float32 data
    with pytest.raises(GpunetError, match="magic"):
        parse_idx(b"PK\x03\x04" + raw[4:], "a.zip")


def test_read_idx_gz_and_digest(tmp_path):
    raw = idx_bytes(np.arange(10, dtype=np.uint8))
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(raw))
    assert read_idx(path).tolist() == list(range(10))
    with pytest.raises(GpunetError, match="SHA-256"):
        read_idx(path, sha256="0" * 64)
    path.write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(GpunetError, match=str(path)):
        read_idx(path)


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


def test_bundled_mnist_matches_known_facts():
    train, test = load_mnist()
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == np.uint8
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
