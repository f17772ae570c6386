"""Plots: `gpunet train` draws every plot as a readable PNG, `gpunet plot` redraws them, --no-plots skips them."""

import numpy as np
from PIL import Image

from gpunet.runs import plots
from helpers import PLOTS, cli


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
