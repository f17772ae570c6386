"""gpunet/files.py: only regular files are read (devices, FIFOs, sockets and symlinks to them are one line, at once,
in every command that reads a file), and the temporary files of writes killed midway are cleaned up later."""

import contextlib
import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.core.model import MLP
from gpunet.errors import GpunetError
from gpunet.files import STALE_TMP_SECONDS, atomic_write, open_regular, read_json, read_limited
from gpunet.runs.store import save_model

from helpers import assert_clean_error, cli

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero (POSIX)")
PROMPT = 20  # seconds: a refusal takes milliseconds; a read of /dev/zero or a FIFO never ends


@contextlib.contextmanager
def prompt(seconds: int = PROMPT):
    """Fail the test (instead of hanging or filling memory) if the block takes over `seconds`."""
    def late(*_):
        raise AssertionError(f"still running after {seconds} s: the file was read as if it were a regular one")
    previous = signal.signal(signal.SIGALRM, late)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def odd(tmp_path):
    """Paths that are not regular files: a character device, a FIFO with no writer, a socket, and symlinks to the
    device and the FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    (tmp_path / "to-zero").symlink_to("/dev/zero")
    (tmp_path / "to-fifo").symlink_to(fifo)
    yield {"device": Path("/dev/zero"), "fifo": fifo, "socket": tmp_path / "sock",
           "link to a device": tmp_path / "to-zero", "link to a FIFO": tmp_path / "to-fifo"}
    sock.close()


KINDS = ["device", "fifo", "socket", "link to a device", "link to a FIFO"]


@pytest.mark.parametrize("kind", KINDS)
def test_open_regular_refuses_what_is_not_a_regular_file(odd, kind):
    with prompt(), pytest.raises(GpunetError, match="not a regular file"):
        open_regular(odd[kind])
    with prompt(), pytest.raises(GpunetError, match="not a regular file"):
        read_json(odd[kind], 1000)


def test_open_regular_reads_files_and_keeps_the_usual_errors(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    for path in (tmp_path / "f", tmp_path / "link"):
        with open_regular(path) as f:
            assert f.read() == b"abc"
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        open_regular(tmp_path)
    with pytest.raises(GpunetError, match="over 2 bytes"):
        read_limited(tmp_path / "f", 2)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    save_model(path, MLP(get_backend("cpu"), (784, 8, 10), seed=0))
    return path


def png(tmp_path):
    from PIL import Image

    path = tmp_path / "digit.png"
    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    Image.fromarray(image).save(path)
    return path


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["evaluate", "export", "predict-model", "predict-image", "serve", "config",
                                     "plot", "train-resume"])
def test_every_command_refuses_a_path_that_is_not_a_file_at_once(odd, tmp_path, model, kind, command):
    if command == "serve":
        pytest.importorskip("fastapi", reason="the serve extra is not installed")
    bad = odd[kind]
    run = tmp_path / "run"  # a run directory whose files are the odd path
    run.mkdir()
    for name in ("model.npz", "checkpoint.npz", "metrics.json"):
        (run / name).symlink_to(bad)
    args = {"evaluate": ["evaluate", bad, "--device", "cpu"],
            "export": ["export", run, "--onnx", tmp_path / "m.onnx"],
            "predict-model": ["predict", bad, png(tmp_path)],
            "predict-image": ["predict", model, bad],
            "serve": ["serve", run, "--port", 0],
            "config": ["train", "--config", bad, "--out", tmp_path / "out"],
            "plot": ["plot", run],
            "train-resume": ["train", "--resume", run]}[command]
    with prompt():
        result = cli(*args)
    assert_clean_error(result, "not a regular file")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_data_files_that_are_not_files_are_refused(odd, tmp_path, kind):
    from gpunet.data.idx import read_idx

    link = tmp_path / "train-images-idx3-ubyte.gz"
    link.symlink_to(odd[kind])
    with prompt(), pytest.raises(GpunetError, match="not a regular file"):
        read_idx(link, size=1000)
    (tmp_path / "plain").write_bytes(gzip.compress(b"x"))
    assert open_regular(tmp_path / "plain").read() == gzip.compress(b"x")


# Temporary files left by killed writes ----------------------------------------------------------------------------

def killed_write(path: Path) -> Path:
    """Start a real write of `path` in another process and kill -9 it midway; the temporary file it leaves."""
    code = ("import os, sys; from pathlib import Path; from gpunet.files import atomic_write\n"
            "def write(f):\n    f.write(b'half'); f.flush(); os.kill(os.getpid(), 9)\n"
            "atomic_write(Path(sys.argv[1]), write)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, timeout=120)
    assert done.returncode == -9
    (left,) = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    return left


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_write_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"previous")
    left = killed_write(target)
    assert target.read_bytes() == b"previous" and left.read_bytes() == b"half"
    age(left, 120)  # its process is gone, and it is not brand new
    atomic_write(target, lambda f: f.write(b"next"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]
    assert target.read_bytes() == b"next"


def test_only_stale_temporaries_of_the_same_file_are_removed(tmp_path):
    target = tmp_path / "model.npz"
    alive = os.getppid()  # a process that runs as long as this test does
    dead = killed_write(tmp_path / "other.npz").name.split(".")[3]  # the pid of a process that has ended
    files = {
        f".model.npz.{dead}.abc123xy.tmp": (120, False),  # a dead process's, a minute old: removed
        f".model.npz.{dead}.fresh0xy.tmp": (5, True),  # a dead process's, but seconds old: kept for now
        f".model.npz.{alive}.live00xy.tmp": (120, True),  # a running process's: kept
        f".model.npz.{alive}.older0xy.tmp": (STALE_TMP_SECONDS + 60, False),  # untouched for an hour: removed
        ".model.npz.oldstyle.tmp": (STALE_TMP_SECONDS + 60, False),  # an older version's name: removed
        ".model.npz.newstyle.tmp": (120, True),  # an older version's name, not stale yet: kept
        f".other.npz.{dead}.abc123xy.tmp": (STALE_TMP_SECONDS + 60, True),  # another file's: not ours to remove
        f"model.npz.{dead}.abc123xy.tmp": (STALE_TMP_SECONDS + 60, True),  # not our pattern
        f".model.npz.{dead}.abc123xy.tmp.keep": (STALE_TMP_SECONDS + 60, True),
    }
    for name, (seconds, _) in files.items():
        (tmp_path / name).write_bytes(b"x")
        age(tmp_path / name, seconds)
    atomic_write(target, lambda f: f.write(b"new"))
    kept = {p.name for p in tmp_path.iterdir()} - {"model.npz"}
    assert kept == {name for name, (_, keep) in files.items() if keep} | {
        p.name for p in tmp_path.iterdir() if p.name.startswith(".other.npz.") and p.name.endswith(".tmp")}
