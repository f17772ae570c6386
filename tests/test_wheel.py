"""The wheel, as a new user gets it: built from this tree, installed into a fresh venv, trained from an unrelated
folder with the data given by --data-dir. Slow (a build and an install); CI runs it (the test extra brings `build`)."""

import json
import os
import site
import socket
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def setuptools_at_least(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """gpunet-*.whl built (through the sdist) from this tree: offline with the installed setuptools when it is
    recent enough, else in build's isolated environment, which needs PyPI."""
    pytest.importorskip("build", reason="needs `build` (in the test extra): pip install build")
    isolated = not setuptools_at_least(77)
    if isolated and not pypi_reachable():
        pytest.skip("building the wheel needs setuptools>=77: installed here, or PyPI for an isolated build")
    out = tmp_path_factory.mktemp("dist")
    # The sdist, then the wheel from the unpacked sdist (as pip does from an index): no build/ left in the tree.
    cmd = [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)]
    proc = subprocess.run(cmd + ([] if isolated else ["--no-isolation"]), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "SetuptoolsDeprecationWarning" not in log and "SetuptoolsWarning" not in log, log  # e.g. data as package
    (path,) = out.glob("gpunet-*.whl")
    return path


def test_sdist_holds_the_tests_and_the_configs(wheel):
    (sdist,) = wheel.parent.glob("gpunet-*.tar.gz")
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"tests/conftest.py", "tests/test_wheel.py", "configs/default.toml", "LICENSE"} <= names


def test_wheel_holds_the_package_data_and_no_dataset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"gpunet/configs/{p.name}" for p in (ROOT / "configs").glob("*.toml")}  # the top folder, moved in
    assert {"gpunet/configs/default.toml", "gpunet/configs/seed.toml"} <= configs <= names
    assert {"gpunet/apps/static/index.html", "gpunet/apps/static/app.js", "gpunet/apps/static/style.css",
            "gpunet/py.typed"} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gpunet").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every package is listed in pyproject.toml
    assert not [n for n in names if n.startswith(("data/", "configs/", "tests/")) or n.endswith(".gz")]


def test_installed_wheel_trains_from_another_folder(wheel, tmp_path):
    pytest.importorskip("pip", reason="installing the wheel needs pip in this environment")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from this environment's site-packages, added as plain paths: their .pth files (this
    # checkout's editable gpunet among them) are not run, so the only gpunet the venv can import is the wheel's.
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), GPUNET_DATA=str(tmp_path / "none"))
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", "--ignore-installed", "--quiet", str(wheel)],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    gpunet = [str(env_dir / "bin" / "gpunet")]

    def run(*args):
        return subprocess.run(gpunet + [str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)

    where = subprocess.run([python, "-c", "import gpunet; print(gpunet.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(env_dir)), where.stderr
    configs = run("configs")
    assert configs.returncode == 0 and configs.stdout.startswith("default "), configs.stderr
    seed = subprocess.run([python, "-c", "from gpunet.runs.config import packaged_configs as p, load_config as l; "
                           "print(p()['seed']); print(l('seed').optimizer)"], cwd=work, env=env, capture_output=True,
                          text=True)
    assert seed.stdout.splitlines()[1:] == ["gd"] and seed.stdout.startswith(str(env_dir)), seed.stderr

    result = run("train", "--device", "cpu", "--epochs", 1, "--limit", 1000, "--no-plots",
                 "--data-dir", ROOT / "data" / "mnist", "--out", "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.2 and metrics["train_samples"] == 1000  # the packaged default recipe
    assert 0.5 < metrics["test_accuracy"] <= 1

    hint = subprocess.run([python, "-c", "from gpunet.install import extra_requirements as r, pip_extra as p; "
                           "print(p('cuda12')); print(r('cuda13')); print(r('serve'))"],
                          cwd=work, env=env, capture_output=True, text=True)
    assert hint.stdout.splitlines() == [  # not the clone's `-e '.[cuda12]'`; the extras as the wheel declares them
        "pip install 'gpunet[cuda12]'", "['cupy-cuda13x[ctk]>=14']", "['fastapi>=0.110', 'uvicorn>=0.29']"], hint.stderr
