"""gpunet outside its clone: packaged configs, data from --data-dir / $GPUNET_DATA / the cache, datasets known by
their content, the offline message, install hints that fit the install, and a CLI that is quiet where it should be."""

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunet import install
from gpunet.data import locate
from gpunet.apps.cli import app
from gpunet.runs.config import describe, load_config, packaged_configs
from gpunet.data.load import load_mnist
from gpunet.data.datasets import DATASETS
from gpunet.errors import GpunetError

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "data" / "mnist"
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private, empty cache and no $GPUNET_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNET_DATA", raising=False)


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """gpunet as a wheel install sees it: no clone's data/ folder, run from an unrelated folder, mirrors offline."""
    monkeypatch.setattr(locate, "repo_data", lambda: None)
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a local port with nothing listening: downloads fail at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    offline = dataclasses.replace(DATASETS["mnist"], mirrors=(f"http://127.0.0.1:{port}/",))
    monkeypatch.setitem(DATASETS, "mnist", offline)


@pytest.fixture
def data_root(tmp_path):
    """A $GPUNET_DATA-style root holding mnist/ (a link to the repository's copy)."""
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "mnist").symlink_to(MNIST, target_is_directory=True)
    return root


# --- configs -----------------------------------------------------------------------------------------


def test_configs_are_one_folder_at_the_top_and_nowhere_else():
    packaged = packaged_configs()
    assert {"default", "seed"} <= set(packaged)
    assert all(Path(str(f)).parent == ROOT / "configs" for f in packaged.values())
    tomls = set()
    for folder, dirs, files in os.walk(ROOT):  # the tree, without hidden folders (.git, venvs) and build outputs
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "dist", "runs", "__pycache__")]
        tomls |= {(Path(folder) / f).relative_to(ROOT).as_posix() for f in files if f.endswith(".toml")}
    assert tomls == {"pyproject.toml"} | {f"configs/{name}.toml" for name in packaged}  # no second copy


def test_config_by_name_or_path(tmp_path):
    assert load_config().lr == 0.2 and load_config("default").epochs == 6
    seed = load_config("seed")
    assert (seed.epochs, seed.batch_size, seed.optimizer, seed.lr) == (500, "full", "gd", 0.1)
    mine = tmp_path / "mine.toml"
    mine.write_text("hidden = 64\nlr = 0.05\nepochs = 2\nbatch_size = 32\n")
    assert load_config(mine).hidden == [64] and load_config(str(mine)).lr == 0.05
    assert load_config(ROOT / "configs" / "seed.toml") == seed  # a packaged config by its path in the clone
    with pytest.raises(GpunetError, match=r"elsewhere/seed\.toml: config file not found.*default, seed.*gpunet configs"):
        load_config("elsewhere/seed.toml")


def test_gpunet_configs_lists_names_and_what_they_are():
    result = cli("configs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("default ") and "(used without --config)" in lines[0]
    assert "Chosen on the validation split" in lines[0] and "6 epochs of SGD with" in lines[0]
    assert describe("# One. Two.\n# Three\nlr = 0.1\n# not this") == "One."
    assert lines[1].startswith("seed ") and "seed recipe exactly" in lines[1]


def test_train_outside_the_clone_with_data_dir_and_packaged_config(installed, data_root, tmp_path):
    result = cli("train", "--device", "cpu", "--config", "seed", "--epochs", 1, "--limit", 300, "--no-plots",
                 "--data-dir", data_root, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["optimizer"] == "gd" and metrics["config"]["batch_size"] == "full"
    assert f"mnist: {data_root / 'mnist'} (--data-dir copy, verified)" in result.stderr


# --- data outside the clone ---------------------------------------------------------------------------


def test_outside_the_clone_the_search_path_has_no_repository_folder(installed):
    assert [where for where, _ in locate.search_path(DATASETS["mnist"])] == ["cache"]


def test_gpunet_data_root_is_used(installed, data_root, monkeypatch):
    monkeypatch.setenv("GPUNET_DATA", str(data_root))
    found, _ = locate.locate(DATASETS["mnist"])
    assert found.where == "$GPUNET_DATA" and found.folder == data_root / "mnist"


def test_gpunet_data_may_also_be_the_dataset_folder(installed, data_root, monkeypatch):
    monkeypatch.setenv("GPUNET_DATA", str(data_root / "mnist"))
    found, _ = locate.locate(DATASETS["mnist"])
    assert found.where == "$GPUNET_DATA" and found.folder == data_root / "mnist"
    fashion = [p for p in locate.locate(DATASETS["fashion-mnist"])[1] if p.where == "$GPUNET_DATA"]
    assert fashion[0].other == "mnist" and not fashion[0].present  # another dataset's folder is passed over


def test_offline_without_a_copy_one_message_names_every_way_out(installed, tmp_path):
    result = cli("train", "--device", "cpu", "--epochs", 1, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = result.stderr[result.stderr.index("error: "):]
    assert result.stderr.count("error: ") == 1
    for hint in ("gpunet data fetch mnist", "--data-dir", "$GPUNET_DATA", "Looked in"):
        assert hint in error, error
    (mirror,) = DATASETS["mnist"].mirrors
    assert result.stderr.count(f"{mirror}train-images-idx3-ubyte.gz: ") == 1  # each failure listed once
    assert not (tmp_path / "run").exists()


def test_evaluate_needs_only_the_test_files(installed, data_root, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--data-dir", data_root,
               "--out", run).exit_code == 0
    offline = cli("evaluate", run, "--device", "cpu")  # no copy: it tries to download the test files alone
    error = offline.stderr[offline.stderr.index("error: "):]
    assert offline.exit_code == 2 and "could not download t10k-images-idx3-ubyte.gz" in error
    assert "train-images" not in offline.stderr, offline.stderr
    test_only = tmp_path / "test-only"
    test_only.mkdir()
    for f in MNIST.glob("t10k-*"):
        (test_only / f.name).symlink_to(f)
    result = cli("evaluate", run, "--device", "cpu", "--json", "--data-dir", test_only)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 10_000


def test_a_cache_of_the_test_files_alone_serves_evaluate_and_is_partial_not_damaged(installed, data_root, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--data-dir", data_root,
               "--out", run).exit_code == 0
    cache = locate.cache_dir("mnist")
    cache.mkdir(parents=True)
    for f in MNIST.glob("t10k-*"):  # what `evaluate` downloads on a machine without MNIST
        (cache / f.name).symlink_to(f)
    result = cli("evaluate", run, "--device", "cpu", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["samples"] == 10_000, result.output
    result = cli("data", "verify", "mnist")
    assert result.exit_code == 0 and f"part mnist: cache {cache}" in result.stdout and "BAD" not in result.stdout
    assert "partial, skipped" in cli("data", "list").stdout


def test_plot_without_the_test_set_draws_the_rest_and_says_what_it_skipped(installed, data_root, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--data-dir", data_root,
               "--out", run).exit_code == 0
    result = cli("plot", run)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(run / "curves.png"), str(run / "weights.png")]
    assert "warning: skipped confusion.png, predictions.png, mistakes.png (drawn from the mnist test set): mnist " \
           "is not on this machine" in result.stderr
    assert (run / "curves.png").stat().st_size > 0 and not (run / "confusion.png").exists()


def test_evaluate_and_plot_take_data_dir(installed, data_root, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--data-dir", data_root,
               "--out", run).exit_code == 0
    assert cli("evaluate", run, "--device", "cpu").exit_code == 2  # offline, no copy: needs --data-dir
    result = cli("evaluate", run, "--device", "cpu", "--json", "--data-dir", data_root)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 10_000
    result = cli("plot", run, "--data-dir", data_root / "mnist")
    assert result.exit_code == 0, result.output
    assert (run / "confusion.png").stat().st_size > 0 and (run / "mistakes.png").exists()


# --- datasets known by their content --------------------------------------------------------------------


def test_mnist_folder_is_ok_for_mnist_and_not_bad_for_fashion_mnist():
    result = cli("data", "verify", "--data-dir", MNIST)
    assert result.exit_code == 0, result.output
    assert f"ok   mnist: --data-dir {MNIST}" in result.stdout and "BAD" not in result.output
    result = cli("data", "list", "--data-dir", MNIST)
    assert result.exit_code == 0 and "damaged" not in result.output
    assert f"found: --data-dir {MNIST} (verified)" in result.stdout


def test_a_folder_of_another_dataset_is_passed_over_not_called_damaged():
    warnings = []
    found, seen = locate.locate(DATASETS["fashion-mnist"], MNIST, warnings.append)
    assert found is None or found.where != "--data-dir"
    assert seen[0].other == "mnist" and not seen[0].present and seen[0].problem is None
    assert warnings[0] == f"warning: --data-dir {MNIST} holds mnist, not fashion-mnist; looking further"
    assert locate.holder(MNIST) == "mnist"


def test_a_good_copy_is_read_once_and_label_files_are_read_with_their_size_cap(monkeypatch):
    """Finding MNIST decompresses each of its files once; telling which dataset a folder holds (after its copy
    failed) reads label files no further than their registered size, so a gzip bomb never expands."""
    reads = []

    def counted(path, size=None):
        reads.append((path.name, size))
        return real(path, size)

    real = locate.read_bytes
    monkeypatch.setattr(locate, "read_bytes", counted)
    found, _ = locate.locate(DATASETS["mnist"], MNIST)
    assert found is not None and found.where == "--data-dir" and reads == []  # read_copy reads through read_idx
    assert locate.holder(MNIST) == "mnist"
    assert reads and all(size is not None for _, size in reads)


def test_damaged_mnist_is_still_damaged_mnist(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in MNIST.iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"damaged")
    result = cli("data", "verify", "--data-dir", folder)
    assert result.exit_code == 2
    assert f"BAD  mnist: --data-dir {folder}" in result.stdout and "BAD  fashion-mnist" not in result.stdout


# --- a quiet library, a CLI that fits its install ---------------------------------------------------------


def test_library_loads_print_nothing(capfd):
    train, test = load_mnist()
    assert len(train.labels) == 60_000 and len(test.labels) == 10_000
    assert capfd.readouterr() == ("", "")


def test_dash_h_and_shell_completion():
    for args in (["-h"], ["train", "-h"], ["data", "-h"], ["data", "verify", "-h"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output, args
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_this_checkout_is_a_clone():
    assert install.in_clone() and install.pip_extra("serve") == "pip install -e '.[serve]'"


@pytest.mark.parametrize("clone", [True, False])
def test_install_hints_fit_how_gpunet_was_installed(monkeypatch, tmp_path, clone):
    root = tmp_path / "site-packages"  # the folder above the package: a clone's root, or site-packages
    root.mkdir()
    if clone:
        (root / "pyproject.toml").write_text("[project]\nname = 'gpunet'\n")
    monkeypatch.setattr(install, "CLONE", root)
    assert install.in_clone() is clone
    assert install.pip_extra("cuda12") == ("pip install -e '.[cuda12]'" if clone else "pip install 'gpunet[cuda12]'")


def test_install_hint_under_pipx(monkeypatch, tmp_path):
    monkeypatch.setattr(install, "in_clone", lambda: False)
    monkeypatch.setattr(install.sys, "prefix", str(tmp_path / ".local" / "share" / "pipx" / "venvs" / "gpunet"))
    monkeypatch.setattr(install.metadata, "requires", lambda name: [
        'numpy>=1.26', 'cupy-cuda12x[ctk]>=14; extra == "cuda12"', 'fastapi>=0.110; extra == "serve"',
        'uvicorn>=0.29; extra == "serve"'])
    assert install.pip_extra("cuda12") == "pipx inject gpunet 'cupy-cuda12x[ctk]>=14'"
    assert install.pip_extra("serve") == "pipx inject gpunet 'fastapi>=0.110' 'uvicorn>=0.29'"


def test_cuda_hint_for_an_installed_package(monkeypatch, tmp_path):
    import sys

    monkeypatch.setattr(install, "in_clone", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)
    result = cli("train", "--device", "cuda", "--epochs", 1, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "pip install 'gpunet[cuda" in result.stderr and "-e '." not in result.stderr


def test_long_stderr_lines_are_not_wrapped(tmp_path):
    empty = tmp_path / ("a-folder-with-a-long-name-" * 5)
    empty.mkdir()
    result = cli("train", "--device", "cpu", "--epochs", 1, "--limit", 100, "--no-plots", "--data-dir", empty,
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"warning: --data-dir {empty} holds no mnist files; looking further" in result.stderr.splitlines()
