"""The IDX reader on bytes the tests make: good, truncated, wrong magic, gzip and digest checks."""

import gzip

import numpy as np
import pytest

from gpunet.errors import GpunetError
from gpunet.data.idx import parse_idx, read_idx
from helpers import idx_bytes


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
