"""The command line itself: --version, `gpunet info`, and `train` as a subcommand with its own help."""

import gpunet
from helpers import cli


def test_version_and_info():
    assert cli("--version").stdout.strip() == f"gpunet {gpunet.__version__}"
    result = cli("info")
    assert result.exit_code == 0 and "numpy" in result.stdout and "cupy" in result.stdout


def test_train_is_a_subcommand_with_its_own_help():
    result = cli("--help")
    assert result.exit_code == 0 and "train" in result.stdout and "info" in result.stdout
    result = cli("train", "--help")
    assert result.exit_code == 0 and "--epochs" in result.stdout and "--device" in result.stdout
