"""Downloads against an HTTP server on 127.0.0.1 started by the tests: mirrors tried in turn, checksums, short
and long bodies, timeouts, nothing partial left behind, and the `gpunet data` commands."""

import dataclasses
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpunet.data.load import load_dataset
from gpunet.errors import GpunetError
from gpunet.data.fetch import fetch
from gpunet.data.locate import cache_dir, read_copy
from helpers import cli, closed_port, corrupt, place, quiet, register

pytestmark = pytest.mark.usefixtures("isolated")


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
    assert console.file.getvalue().count(f"{base}/missing/train-images-idx3-ubyte.gz: HTTP 404") == 1


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
    console = quiet()
    with pytest.raises(GpunetError) as err:
        fetch(ds, console=console)
    assert "HTTP 404" not in console.file.getvalue()  # each failure is listed once: in the error
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


def test_fetch_force_replaces_a_bad_cached_copy(monkeypatch, tiny, server):
    base, _ = server
    ds = register(monkeypatch, tiny, [f"{base}/good/"])
    bad = place(cache_dir("tiny"), tiny, lambda name, raw: raw[:-1] if name == "t10k-labels-idx1-ubyte" else raw)
    with pytest.raises(GpunetError, match=r"t10k-labels-idx1-ubyte\.gz.*--force"):
        fetch(ds, console=quiet())
    fetch(ds, force=True, console=quiet())
    assert read_copy(ds, bad)[1].labels.tolist() == [3, 1, 4, 1]


def test_data_fetch_list_and_verify_commands(tmp_path, monkeypatch, tiny, server):
    base, _ = server
    register(monkeypatch, tiny, [f"{base}/good/"], name="fashion-mnist")
    result = cli("data", "verify", "fashion-mnist")
    assert result.exit_code == 2 and "no copy on the search path" in result.output
    result = cli("data", "list")
    assert result.exit_code == 0 and "missing: run `gpunet data fetch fashion-mnist`" in result.output
    result = cli("data", "fetch", "fashion-mnist")
    assert result.exit_code == 0, result.output
    assert f"verified files in {cache_dir('fashion-mnist')}" in result.output
    assert f"found: cache {cache_dir('fashion-mnist')}" in cli("data", "list").output

    (cache_dir("fashion-mnist") / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    result = cli("data", "verify", "fashion-mnist")
    assert result.exit_code == 2 and "BAD" in result.output
    assert str(cache_dir("fashion-mnist") / "train-labels-idx1-ubyte.gz") in result.output
    assert "Traceback" not in result.output


def test_train_without_data_or_network_says_where_it_looked(tmp_path, monkeypatch, tiny):
    register(monkeypatch, tiny, [f"http://127.0.0.1:{closed_port()}/"], name="fashion-mnist")
    result = cli("train", "--device", "cpu", "--dataset", "fashion-mnist", "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "Looked in" in result.output and f"cache {cache_dir('fashion-mnist')}: no files" in result.output
    assert "gpunet data fetch fashion-mnist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
