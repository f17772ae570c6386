"""Configuration: bad values in a config file or on the command line, a config file that is missing or not text,
each one clean line naming the key, the value and what is allowed, and no run directory made."""

import pytest

from helpers import assert_clean_error, cli

GOOD = {"hidden": "128", "epochs": "1", "batch_size": "128", "lr": "0.1"}


@pytest.mark.parametrize("key, value, fragments", [
    ("lr", "-0.1", ["lr = -0.1", "a number > 0"]),
    ("epochs", "0", ["epochs = 0", "integer >= 1"]),
    ("hidden", "0", ["hidden = 0"]),
    ("epochs", '"ten"', ["epochs = 'ten'"]),
    ("batch_size", '"half"', ["batch_size = 'half'", '"full"']),
    ("optimizer", '"sgdd"', ["optimizer = 'sgdd'", "gd | momentum | adam"]),
    ("lrr", "0.1", ["unknown key 'lrr'"]),
    ("lr", "", ["not valid TOML"]),
])
def test_bad_config_values_exit_2(tmp_path, key, value, fragments):
    path = tmp_path / "bad.toml"
    path.write_text("".join(f"{k} = {v}\n" for k, v in {**GOOD, key: value}.items()))
    result = cli("train", "--config", path, "--device", "cpu", "--out", tmp_path / "r")
    assert_clean_error(result, str(path), *fragments)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "0"], "epochs = 0"),
    (["--lr", "-1"], "lr = -1.0"),
    (["--hidden", "0"], "hidden = [0]"),
    (["--hidden", "a,b"], "--hidden 'a,b'"),
    (["--batch-size", "big"], "--batch-size 'big'"),
])
def test_bad_options_exit_2(tmp_path, args, fragment):
    assert_clean_error(cli("train", "--device", "cpu", *args, "--out", tmp_path / "r"), fragment)


def test_config_that_is_not_text(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe lr = 1\n")
    assert_clean_error(cli("train", "--config", path), str(path), "not a text file")


def test_missing_config_file(tmp_path):
    assert_clean_error(cli("train", "--config", tmp_path / "nope.toml"), "config file not found")


@pytest.mark.parametrize("text, fragment", [
    ("epochs = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "nested too deeply"),
    # tomllib reads this header and refuses its key; tomli (Python 3.10) recurses too deep: either is one line
    ("[" + "a." * 5000 + "b]\nepochs = 1", ("unknown key 'a'", "nested too deeply")),
    ("epochs = " + "9" * 5000, "not valid TOML"),
    ("lr = " + "1" * 5000 + ".5", "lr = "),
    ("hidden = [" + "1" * 4400 + "]", "not valid TOML"),
    ("epochs = 1\n" * 2, "not valid TOML"),
])
def test_hostile_toml_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "hostile.toml"
    path.write_text(text)
    result = cli("train", "--config", path, "--device", "cpu", "--out", tmp_path / "r")
    assert_clean_error(result, str(path))
    assert any(f in result.stderr for f in ((fragment,) if isinstance(fragment, str) else fragment)), result.stderr
    assert not (tmp_path / "r").exists()


def test_a_config_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# padding\n" * 200_000 + "epochs = 1\n")
    assert_clean_error(cli("train", "--config", path, "--out", tmp_path / "r"), "too big for a config file")
