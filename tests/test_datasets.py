"""The dataset registry, search path and downloads, against an HTTP server on 127.0.0.1 started by the tests."""

import dataclasses
import gzip
import hashlib
import io
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from gpunet.backend import get_backend
from gpunet.cli import app
from gpunet.data import load_dataset
from gpunet.datasets import DATASETS, DataFile, Dataset, class_names
from gpunet.errors import GpunetError
from gpunet.fetch import fetch
from gpunet.locate import cache_dir, locate, read_copy
from gpunet.store import load_model

runner = CliRunner()


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache and no $GPUNET_DATA, so no test sees the user's copies or writes outside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNET_DATA", raising=False)


@pytest.fixture(scope="module")
def tiny():
    """Small IDX files (8 train, 4 test images): raw bytes, canonical .gz bytes and their DataFile entries."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(8) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
              "t10k-labels-idx1-ubyte": np.array([3, 1, 4, 1])}
    raw = {name: idx_bytes(a) for name, a in arrays.items()}
    gz = {name: gzip.compress(r, mtime=0) for name, r in raw.items()}
    files = tuple(DataFile(name, hashlib.sha256(gz[name]).hexdigest(), len(gz[name]),
                           hashlib.sha256(raw[name]).hexdigest()) for name in arrays)
    return {"raw": raw, "gz": gz, "files": files}


def corrupt(data: bytes) -> bytes:
    """Same length, one byte changed."""
    return data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:]


@pytest.fixture
def server(tiny):
    """Serves /good/, /corrupt/ (same size, one byte flipped), /short/ (10 bytes missing) and /long/ (extra bytes,
    no Content-Length); anything else is a 404. Yields (base URL, list of paths requested)."""
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            kind, _, name = self.path.strip("/").partition("/")
            body = tiny["gz"].get(name.removesuffix(".gz"))
            if body is None or kind not in ("good", "corrupt", "short", "long"):
                self.send_error(404)
                return
            body = {"good": body, "corrupt": corrupt(body), "short": body[:-10], "long": body + b"extra"}[kind]
            self.send_response(200)
            if kind != "long":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def register(monkeypatch, tiny, mirrors, name="tiny"):
    """A registry entry `name` for the tiny files, downloaded from `mirrors`, with no system copy."""
    ds = Dataset(name=name, title="tiny test set", classes=tuple("abcdefghij"), mirrors=tuple(mirrors),
                 files=tiny["files"])
    monkeypatch.setitem(DATASETS, name, ds)
    return ds


def place(folder, tiny, damage=None):
    """Write the tiny .gz files into `folder`; `damage(name, raw) -> bytes` may alter a file's raw content."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in tiny["raw"].items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(damage(name, raw) if damage else raw))
    return folder


def quiet():
    return Console(file=io.StringIO(), width=300)


def closed_port() -> int:
    """A local port with nothing listening: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_good_download_lands_in_the_cache_and_verifies(tmp_path, monkeypatch, tiny, server):
    base, hits = server
    ds = register(monkeypatch, tiny, [f"{base}/good/"])
    folder = fetch(ds, console=quiet())
    assert folder == tmp_path / "cache" / "gpunet" / "tiny" == cache_dir("tiny")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{f.name}.gz" for f in ds.files)
    for f in ds.files:
        assert (folder / f"{f.name}.gz").read_bytes() == tiny["gz"][f.name]
    train, test = load_dataset("tiny", console=quiet())
    assert train.images.shape == (8, 28, 28) and test.labels.tolist() == [3, 1, 4, 1]
    assert len(hits) == 4  # loading found the cache: no second download
    fetch(ds, console=quiet())
    assert len(hits) == 4  # a verified cache is kept


def test_first_mirror_404_second_good(monkeypatch, tiny, server):
    base, hits = server
    ds = register(monkeypatch, tiny, [f"{base}/missing/", f"{base}/good/"])
    console = quiet()
    read_copy(ds, fetch(ds, console=console))
    assert hits[:2] == ["/missing/train-images-idx3-ubyte.gz", "/good/train-images-idx3-ubyte.gz"]
    assert "HTTP 404" in console.file.getvalue()


def test_corrupt_first_mirror_is_rejected_by_checksum(monkeypatch, tiny, server):
    base, hits = server
    ds = register(monkeypatch, tiny, [f"{base}/corrupt/", f"{base}/good/"])
    console = quiet()
    folder = fetch(ds, console=console)
    assert "checksum mismatch" in console.file.getvalue()
    assert all((folder / f"{f.name}.gz").read_bytes() == tiny["gz"][f.name] for f in ds.files)
    assert len(hits) == 8  # each file: the corrupt mirror, then the good one


def test_every_mirror_bad_gives_one_clean_error_and_leaves_nothing(tmp_path, monkeypatch, tiny, server):
    base, _ = server
    mirrors = [f"{base}/missing/", f"{base}/corrupt/", f"{base}/short/", f"{base}/long/"]
    ds = register(monkeypatch, tiny, mirrors)
    with pytest.raises(GpunetError) as err:
        fetch(ds, console=quiet())
    message = str(err.value)
    for mirror, reason in zip(mirrors, ["HTTP 404", "checksum mismatch", "announces", "more than the expected"]):
        line = next(line for line in message.splitlines() if f"{mirror}train-images-idx3-ubyte.gz" in line)
        assert reason in line
    assert "place the files by hand" in message and str(cache_dir("tiny")) in message
    assert not (tmp_path / "cache").exists()


def test_failed_download_keeps_verified_files_and_no_partial_ones(monkeypatch, tiny, server):
    base, _ = server
    ds = register(monkeypatch, tiny, [f"{base}/good/"])
    ds = dataclasses.replace(ds, files=ds.files[:1] + (dataclasses.replace(ds.files[1], name="absent"),))
    with pytest.raises(GpunetError, match="absent.gz"):
        fetch(ds, console=quiet())
    assert [p.name for p in cache_dir("tiny").iterdir()] == ["train-images-idx3-ubyte.gz"]


def test_a_server_that_never_answers_times_out(monkeypatch, tiny):
    with socket.socket() as silent:  # listens (the kernel completes the handshake) but never reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        ds = register(monkeypatch, tiny, [f"http://127.0.0.1:{silent.getsockname()[1]}/"])
        guard = threading.Timer(30, silent.close)  # without a working timeout: a reset after 30 s, not a hang
        guard.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(GpunetError, match=r"timed out \(no answer within 0.5 s\)"):
                fetch(ds, timeout=0.5, console=quiet())
        finally:
            guard.cancel()
        assert time.monotonic() - t0 < 10  # 0.5 s configured; a generous bound for a loaded machine


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


def test_fetch_force_replaces_a_bad_cached_copy(monkeypatch, tiny, server):
    base, _ = server
    ds = register(monkeypatch, tiny, [f"{base}/good/"])
    bad = place(cache_dir("tiny"), tiny, lambda name, raw: raw[:-1] if name == "t10k-labels-idx1-ubyte" else raw)
    with pytest.raises(GpunetError, match=r"t10k-labels-idx1-ubyte\.gz.*--force"):
        fetch(ds, console=quiet())
    fetch(ds, force=True, console=quiet())
    assert read_copy(ds, bad)[1].labels.tolist() == [3, 1, 4, 1]


def test_bundled_mnist_passes_gpunet_data_verify():
    result = runner.invoke(app, ["data", "verify", "mnist"])
    assert result.exit_code == 0, result.output
    assert "ok   mnist: repository" in result.output and "data/mnist" in result.output


def test_data_fetch_list_and_verify_commands(tmp_path, monkeypatch, tiny, server):
    base, _ = server
    register(monkeypatch, tiny, [f"{base}/good/"], name="fashion-mnist")
    result = runner.invoke(app, ["data", "verify", "fashion-mnist"])
    assert result.exit_code == 2 and "no copy on the search path" in result.output
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0 and "missing: run `gpunet data fetch fashion-mnist`" in result.output
    result = runner.invoke(app, ["data", "fetch", "fashion-mnist"])
    assert result.exit_code == 0, result.output
    assert f"verified files in {cache_dir('fashion-mnist')}" in result.output
    assert f"found: cache {cache_dir('fashion-mnist')}" in runner.invoke(app, ["data", "list"]).output

    (cache_dir("fashion-mnist") / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    result = runner.invoke(app, ["data", "verify", "fashion-mnist"])
    assert result.exit_code == 2 and "BAD" in result.output
    assert str(cache_dir("fashion-mnist") / "train-labels-idx1-ubyte.gz") in result.output
    assert "Traceback" not in result.output


def test_train_without_data_or_network_says_where_it_looked(tmp_path, monkeypatch, tiny):
    register(monkeypatch, tiny, [f"http://127.0.0.1:{closed_port()}/"], name="fashion-mnist")
    result = runner.invoke(app, ["train", "--device", "cpu", "--dataset", "fashion-mnist", "--epochs", "1",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "Looked in" in result.output and f"cache {cache_dir('fashion-mnist')}: no files" in result.output
    assert "gpunet data fetch fashion-mnist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_train_on_fashion_mnist_records_dataset_and_class_names(tmp_path, monkeypatch, tiny):
    register(monkeypatch, tiny, [], name="fashion-mnist")
    place(tmp_path / "files", tiny)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--device", "cpu", "--dataset", "fashion-mnist", "--data-dir",
                                 str(tmp_path / "files"), "--epochs", "1", "--batch-size", "4", "--no-plots",
                                 "--val-size", "2", "--out", str(run)])
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
