"""Plots: `gpunet train` draws every plot as a readable PNG, `gpunet plot` redraws them, --no-plots skips them; a
hand-edited metrics.json is one line, and class names from a model file are drawn safely."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from gpunet.core.backend import get_backend
from gpunet.runs import plots
from gpunet.runs.plots import inputs, labels, plot_run
from gpunet.runs.store import load_model, save_model
from helpers import PLOTS, assert_clean_error, cli


def test_train_draws_every_plot_as_a_readable_png(trained_run):
    for name in PLOTS:
        path = trained_run / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 300 <= image.width <= 3000 and 300 <= image.height <= 3000, (name, image.size)
            assert np.asarray(image.convert("L")).std() > 10, name  # not a blank canvas


def test_plot_command_redraws_and_no_plots_skips(tmp_path):
    bare = tmp_path / "bare"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--out", bare).exit_code == 0
    assert not any((bare / name).exists() for name in PLOTS)
    result = cli("plot", bare)
    assert result.exit_code == 0, result.output
    assert all((bare / name).stat().st_size > 10_000 for name in PLOTS)
    missing = cli("plot", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "no metrics.json" in missing.output


# Hand-edited metrics.json ------------------------------------------------------------------------------------------

ROW = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.91, "seconds": 1.0}
METRICS = {
    "a-list": [ROW],
    "a-string": "history",
    "empty-object": {},
    "history-a-dict": {"history": {"1": ROW}},
    "history-of-strings": {"history": ["epoch 1"]},
    "missing-column": {"history": [{k: v for k, v in ROW.items() if k != "train_accuracy"}]},
    "no-epoch": {"history": [{k: v for k, v in ROW.items() if k != "epoch"}]},
    "columns-differ": {"history": [ROW, {**ROW, "epoch": 2, "extra": 1.0}]},
    "epochs-out-of-order": {"history": [{**ROW, "epoch": 2}, ROW]},
    "string-value": {"history": [{**ROW, "train_loss": "0.5"}]},
    "null-value": {"history": [{**ROW, "val_loss": None}]},
    "bool-epoch": {"history": [{**ROW, "epoch": True}]},
    "accuracy-over-1": {"history": [{**ROW, "train_accuracy": 90.0}]},
    "best-epoch-not-in-history": {"history": [ROW], "best_epoch": 7},
    "best-epoch-negative": {"history": [ROW], "best_epoch": -1},
    "best-epoch-string": {"history": [ROW], "best_epoch": "1"},
    "best-epoch-float": {"history": [ROW], "best_epoch": 1.5},
}
TEXTS = {
    "nested-deeply": "[" * 200_000 + "]" * 200_000,
    "long-integer": '{"history": [{"epoch": ' + "1" * 5000 + "}]}",
    "nan": '{"history": [{"epoch": 1, "train_loss": NaN, "train_accuracy": 0.5, "seconds": 1}]}',
    "not-utf8": b"\xff\xfe{}",
    "empty": "",
}


@pytest.mark.parametrize("content", [*METRICS.values(), *TEXTS.values()], ids=[*METRICS, *TEXTS])
def test_a_hand_edited_metrics_file_is_one_line(tmp_path, trained_run, content):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "model.npz", run / "model.npz")
    path = run / "metrics.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert_clean_error(cli("plot", run), str(run))
    assert not any((run / name).exists() for name in PLOTS)


# Hostile class names -----------------------------------------------------------------------------------------------

HOSTILE = [r"$\frac{1}{0$", "$", "$$", "\\", "\x1b]0;owned\x07", "\x1b[2J\x1b[31mred", "a" * 90_000, "\u202eevil",
           "$x^{$", "\x00\x9b"]


def test_plots_show_any_class_name_safely(tmp_path, trained_run, mnist):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    net, _ = load_model(run / "model.npz", get_backend("cpu"))
    save_model(run / "model.npz", net, {"dataset": "mnist", "classes": HOSTILE})
    paths = plot_run(run, mnist[1])
    assert sorted(p.name for p in paths) == sorted(PLOTS) and all(p.stat().st_size > 10_000 for p in paths)
    images = np.zeros((len(HOSTILE), 28, 28), np.float32)
    probs = np.full((len(HOSTILE), 10), 0.1)
    assert inputs(images, probs, HOSTILE, HOSTILE, tmp_path / "inputs.png").stat().st_size > 10_000


def test_plot_labels_are_printable_bounded_and_never_mathtext():
    for name, label in zip(HOSTILE, labels(HOSTILE)):
        assert len(label) <= 40 + label.count("$") and label.isprintable()
        assert label.count("$") == label.count(r"\$")  # every $ escaped


def test_plots_are_smaller_than_the_model(trained_run):
    model = (trained_run / "model.npz").stat().st_size
    for name in PLOTS:
        assert (trained_run / name).stat().st_size < model / 2, name


def test_curves_of_a_short_run_tick_whole_epochs(monkeypatch, tmp_path):
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig) or path)
    for epochs in (1, 3, 40):
        history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5, "val_loss": 1 / e,
                    "val_accuracy": 0.5} for e in range(1, epochs + 1)]
        plots.curves(history, tmp_path / "curves.png", best_epoch=1)
        for ax in figures[-1].axes:
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (epochs, ticks)
            assert epochs > 10 or ticks == list(range(1, epochs + 1))
