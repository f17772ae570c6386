"""The command line itself: --version, `gpunet info`, the help, the options every command shares, and `serve`
without its extra. The tests marked `smoke` need no extra: CI also runs them (`-m smoke` on this file) in a venv
that has gpunet installed with no extras, so nothing here may import an extra at the top."""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import typer

import gpunet
from gpunet.apps import cli as cli_module
from gpunet.apps.cli import SERVE_MODULES, app
from helpers import assert_clean_error, cli, runner

pytestmark = pytest.mark.smoke


def commands(group=None, prefix=""):
    """(name, click command) of every command, `data` subcommands as 'data list', ..."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_version_and_info():
    for flag in ("--version", "-V"):
        assert cli(flag).stdout.strip() == f"gpunet {gpunet.__version__}"
    result = cli("info")
    assert result.exit_code == 0 and "numpy" in result.stdout and "cupy" in result.stdout


def test_train_is_a_subcommand_with_its_own_help():
    result = cli("--help")
    assert result.exit_code == 0 and "train" in result.stdout and "info" in result.stdout
    result = cli("train", "--help")
    assert result.exit_code == 0 and "--epochs" in result.stdout and "--device" in result.stdout


def test_each_command_has_a_one_line_summary_in_the_list():
    listing = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).stdout
    data_listing = runner.invoke(app, ["data", "--help"], env={"COLUMNS": "120"}).stdout
    for name, command in commands():
        summary, *details = command.help.split("\n\n")
        assert "\n" not in summary and len(summary) <= 80 and summary.endswith("."), (name, summary)
        assert all("\n" not in p for p in details), name  # unwrapped: --help fills the terminal's width
        assert summary in (data_listing if name.startswith("data ") else listing), name


def test_train_help_shows_the_config_defaults():
    params = {p.name: p for p in dict(commands())["train"].params}
    assert params["lr"].show_default == "from the config: 0.2 in default"
    assert params["hidden"].show_default == "from the config: 128 in default"
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "[default: (from the config: 6 in default)]" in result.stdout  # --epochs


def test_device_defaults_to_auto_in_every_command():
    with_device = {name: c for name, c in commands() if any(p.name == "device" for p in c.params)}
    assert {"train", "sweep", "evaluate", "predict", "serve", "bench", "check"} <= set(with_device)
    for name, command in with_device.items():
        (device,) = [p for p in command.params if p.name == "device"]
        assert device.default == "auto" or getattr(device.default, "value", None) == "auto", name


@pytest.mark.parametrize("missing", SERVE_MODULES)
def test_serve_without_its_extra_is_one_line_with_the_install_hint(monkeypatch, missing):
    monkeypatch.delitem(sys.modules, "gpunet.apps.serve", raising=False)
    for name in [m for m in sys.modules if m == missing or m.startswith(f"{missing}.")] or [missing]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ModuleNotFoundError
    result = cli("serve")
    assert_clean_error(result, "gpunet serve needs FastAPI and uvicorn (", " is missing): pip install -e '.[serve]'")
    named = result.stderr.split("(")[1].split()[0]
    assert named == missing or importlib.util.find_spec(named) is None  # or one imported before it is not here


def test_serve_modules_are_every_extra_that_serve_imports():
    """SERVE_MODULES must name each module serve.py imports that is neither the standard library, a core
    dependency nor gpunet, or `gpunet serve` without the extra ends in a traceback."""
    tree = ast.parse(Path(cli_module.__file__).with_name("serve.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    core = {"gpunet", "numpy", "PIL", "typer", "rich", "matplotlib", "__future__"}
    assert imported - core - set(sys.stdlib_module_names) == set(SERVE_MODULES)


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is not None, reason="the serve extra is installed here")
def test_serve_in_a_venv_without_the_extra():
    assert_clean_error(cli("serve"), "gpunet serve needs FastAPI and uvicorn", "pip install")


def test_sweep_out_defaults_to_a_timestamped_folder_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("sweep", "--device", "cpu", "--epochs", 1, "--limit", 300, "--val-size", 100, "--lr", "0.1,0.2")
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("sweep-") and folder.name[len("sweep-"):].replace("-", "").isdigit()
    assert len(json.loads((folder / "sweep.json").read_text())) == 2  # one entry per point
    assert f"into runs/{folder.name}/" in result.stdout
