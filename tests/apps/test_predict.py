"""`gpunet predict` on image files: large inverted PNGs and JPEGs agree with the arrays, bad files are reported
and the others still run."""

import json

import numpy as np
import pytest
from PIL import Image

from gpunet.core.backend import get_backend
from gpunet.data.load import to_features
from gpunet.runs.store import load_model, save_model
from helpers import cli


def test_predict_on_large_inverted_pngs_agrees_with_the_arrays(trained_run, mnist, tmp_path):
    """MNIST test digits drawn large, black ink on white (and some as colour JPEGs), read back by predict."""
    test_split = mnist[1]
    n = 100
    net, _ = load_model(trained_run, get_backend("cpu"))
    expected = net.predict(to_features(test_split.images[:n]))
    paths = []
    for i, digit in enumerate(test_split.images[:n]):
        big = Image.fromarray(255 - digit).resize((224, 224), Image.Resampling.BILINEAR)
        if i % 4 == 0:
            path = tmp_path / f"{i}.jpg"
            Image.merge("RGB", (big, big, big)).save(path, quality=95)
        else:
            path = tmp_path / f"{i}.png"
            big.save(path)
        paths.append(path)
    result = cli("predict", trained_run, *paths, "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["path"] for a in answers] == [str(p) for p in paths]
    got = np.array([a["class_index"] for a in answers])
    assert (got == expected).mean() >= 0.95
    for a in answers:
        assert len(a["probabilities"]) == 10 and sum(a["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert a["prediction"] == max(a["probabilities"], key=a["probabilities"].get)


def test_predict_reports_bad_files_and_still_runs_the_others(trained_run, mnist, tmp_path):
    test_split = mnist[1]
    good = tmp_path / "seven.png"
    Image.fromarray(255 - test_split.images[0]).resize((100, 100)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    show = tmp_path / "show.png"
    result = cli("predict", trained_run, text, good, empty, "--show", show)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert f"error: {text}: not a PNG or JPEG image; give a PNG or JPEG of a digit" in lines
    assert f"error: {empty}: empty file, not an image" in lines
    top3 = [line for line in lines if line.startswith(f"{good}: ")]
    assert len(top3) == 1 and top3[0].count("%") == 3
    assert "Traceback" not in result.output
    with Image.open(show) as image:
        assert image.format == "PNG" and image.width >= 300


HOSTILE = [r"$\frac{1}{0$", "\x1b]0;owned\x07", "\x1b[2J\x1b[31mred", "\u202eevil", "b" * 90_000, "$x^{$",
           "\x9b31m", "c" * 90_000, "\r\roverwrite", "ok"]


def test_class_names_from_a_model_file_reach_the_terminal_escaped_and_bounded(tmp_path, trained_run):
    net, _ = load_model(trained_run, get_backend("cpu"))
    save_model(tmp_path / "model.npz", net, {"dataset": "mnist", "classes": HOSTILE})
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    images = []
    for name in ("plain.png", "\x1b]0;title\x07.png"):  # a file name is shown the same way
        Image.fromarray(digit).save(tmp_path / name)
        images.append(tmp_path / name)
    result = cli("predict", tmp_path / "model.npz", *images, "--show", tmp_path / "show.png")
    assert result.exit_code == 0, result.output
    for text in (result.stdout, result.stderr):
        assert not any(c in text for c in "\x1b\x07\x9b\u202e\r"), repr(text[:300])
        assert all(len(line) < 1000 for line in text.splitlines())
    assert len(result.stdout.splitlines()) == 2 and "\\x1b]0;title\\x07.png: " in result.stdout
    assert (tmp_path / "show.png").stat().st_size > 10_000
    answers = json.loads(cli("predict", tmp_path / "model.npz", *images, "--json").stdout)  # JSON: exact, escaped
    assert set(answers[0]["probabilities"]) == set(HOSTILE)
