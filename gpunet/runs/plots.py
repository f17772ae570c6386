"""PNG plots of a run, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

`plot_run(run_dir)` writes curves.png, confusion.png, predictions.png, mistakes.png and weights.png into
the run directory, each atomically (the three drawn from the test set are skipped when it cannot be loaded).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator
from PIL import Image
from rich.console import Console

from gpunet.core.backend import get_backend
from gpunet.data.load import DeviceData, Split, load_test
from gpunet.errors import GpunetError, printable
from gpunet.runs.evaluate import evaluate
from gpunet.files import atomic_write, read_json
from gpunet.runs.config import is_int
from gpunet.runs.store import MAX_METRICS, history_problem, load_model

DIGIT_CMAP = "gray"  # MNIST style: light ink on black
TEST_PLOTS = ("confusion.png", "predictions.png", "mistakes.png")  # the plots drawn from the test set


def labels(names: list[str]) -> list[str]:
    """Names from a file as plot text: printable, bounded, every "$" literal (never matplotlib's mathtext)."""
    return [printable(n, 40).replace("$", r"\$") for n in names]


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG of 256 colours (plenty for these plots): about a third of the bytes of matplotlib's
    RGBA PNG."""
    FigureCanvasAgg(fig)
    rgba = io.BytesIO()
    fig.savefig(rgba, format="png", dpi=100)
    image = Image.open(rgba).convert("RGB").quantize(256)
    atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))
    return path


CURVES = (("train", "-", "train"), ("val", "-", "validation"),
          ("test", "--", "test (never used for choices)"))  # split, line style, label; runs before the
# validation split (gpunet 0.1) have per-epoch test curves


def curves(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch of each split in the history (train and validation), the kept epoch marked."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    marker = "." * (len(epochs) < 40)
    for split, style, label in CURVES:
        if {f"{split}_loss", f"{split}_accuracy"} <= set(history[0]):
            loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=label, marker=marker)
            acc_ax.plot(epochs, [100 * r[f"{split}_accuracy"] for r in history], style, label=label, marker=marker)
    loss_ax.set(title="Cross-entropy loss", xlabel="epoch", ylabel="mean loss (log scale)", yscale="log")
    title = "Accuracy"
    if best_epoch and "val_accuracy" in history[0]:
        best = next(r for r in history if r["epoch"] == best_epoch)
        title += f" (kept: epoch {best_epoch}, validation {100 * best['val_accuracy']:.2f}%)"
        for ax in (loss_ax, acc_ax):
            ax.axvline(best_epoch, color="0.5", linestyle=":", label="kept epoch")
    acc_ax.set(title=title, xlabel="epoch", ylabel="accuracy (%)")
    for ax in (loss_ax, acc_ax):  # whole epochs: each one up to 10 epochs, else a few
        ax.xaxis.set_major_locator(FixedLocator(epochs) if len(epochs) <= 10 else MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def confusion(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    """The confusion matrix as a heat map with the counts written in (log colour scale, so errors show)."""
    k, classes = len(classes), labels(classes)
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.maximum(cm, 0.5), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=max(cm.max(), 1)))
    fig.colorbar(image, ax=ax, label="test samples (log scale)")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > np.sqrt(cm.max()) else "black")
    ax.set_xticks(range(k), classes, rotation=45 * (max(map(len, classes)) > 2), ha="right" if
                  max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(k), classes)
    accuracy = 100 * np.trace(cm) / cm.sum()
    ax.set(title=f"Confusion matrix ({cm.sum()} test samples, accuracy {accuracy:.2f}%)",
           xlabel="predicted class", ylabel="true class")
    return save(fig, path)


def digit_grid(images: np.ndarray, titles: list[str], wrong: list[bool], title: str, path: Path,
               cols: int = 8) -> Path:
    """Digits (n, 28, 28) in a grid, each titled; wrong answers titled in red."""
    rows = max(1, -(-len(images) // cols))
    height = 1.75 * rows + 0.8
    fig = Figure(figsize=(1.5 * cols, height))  # a fixed layout: constrained layout is slow with many axes
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.8 / height, hspace=0.45, wspace=0.1)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, text, bad in zip(axes, images, titles, wrong):
        ax.imshow(image, cmap=DIGIT_CMAP, vmin=0, vmax=1)
        ax.set_title(text, fontsize=8, color="tab:red" if bad else "black")
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return save(fig, path)


def predictions(images: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str], path: Path,
                n: int = 40) -> Path:
    """The first `n` test digits titled with the prediction and the truth, like the seed's results."""
    pred, classes = probs[:n].argmax(axis=1), labels(classes)
    titles = [f"pred {classes[p]}\ntrue {classes[t]}" for p, t in zip(pred, y[:n])]
    wrong = list(pred != y[:n])
    return digit_grid(images[:n], titles, wrong,
                      f"First {min(n, len(y))} test images: prediction and truth ({sum(wrong)} wrong, in red)", path)


def mistakes(images: np.ndarray, y: np.ndarray, probs: np.ndarray, classes: list[str], path: Path,
             n: int = 24) -> Path:
    """The `n` wrong answers given with the highest confidence."""
    pred, classes = probs.argmax(axis=1), labels(classes)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]
    titles = [f"pred {classes[pred[i]]} ({100 * probs[i, pred[i]]:.0f}%)\ntrue {classes[y[i]]}" for i in order]
    return digit_grid(images[order], titles, [True] * len(order),
                      f"The {len(order)} most confident mistakes (of {len(wrong)} on {len(y)} test images)", path)


def weights(W1: np.ndarray, path: Path, limit: int = 128) -> Path:
    """Each hidden unit's first-layer weights (a column of W1, 784) as a 28x28 tile; red +, blue -."""
    units = min(W1.shape[1], limit)
    cols = 16 if units > 64 else 8
    rows = -(-units // cols)
    side = int(round(np.sqrt(W1.shape[0])))
    # One mosaic image with a 1-pixel gap between tiles (NaN shows as the background).
    mosaic = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for u in range(units):
        r, c = divmod(u, cols)
        mosaic[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            W1[:, u].reshape(side, side)
    bound = float(np.percentile(np.abs(W1[:, :units]), 99.5))
    fig = Figure(figsize=(0.75 * cols + 1.5, 0.75 * rows + 0.8), layout="constrained")
    ax = fig.subplots()
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.35")  # dark grey gaps between the tiles
    image = ax.imshow(mosaic, cmap=cmap, vmin=-bound, vmax=bound, interpolation="nearest")  # sharp, and compact
    ax.set_xticks([(side + 1) * c + side / 2 for c in range(cols)], range(cols))
    ax.set_yticks([(side + 1) * r + side / 2 for r in range(rows)], [cols * r for r in range(rows)])
    ax.tick_params(length=0, labelsize=7)
    ax.set(xlabel="hidden unit (column + row label)", ylabel="hidden unit of the row's first tile")
    fig.colorbar(image, ax=ax, shrink=0.7, label="weight (clipped at the 99.5th percentile of |W1|)")
    shown = f"first {units} of {W1.shape[1]}" if units < W1.shape[1] else f"all {units}"
    ax.set_title(f"First-layer weights W1: each hidden unit's 784 input weights as a {side}x{side} image "
                 f"({shown} units)")
    return save(fig, path)


def inputs(images: np.ndarray, probs: np.ndarray, names: list[str], classes: list[str], path: Path) -> Path:
    """For each image: the 28x28 input the net saw, beside its class probabilities."""
    (n, k), names, classes = probs.shape, labels(names), labels(classes)
    fig = Figure(figsize=(7, 1.9 * n + 0.4), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False, width_ratios=[1, 2.2])
    for (image_ax, bar_ax), image, p, name in zip(axes, images, probs, names):
        image_ax.imshow(image, cmap=DIGIT_CMAP, vmin=0, vmax=1)
        image_ax.set(title=f"{name}\nas the net sees it (28x28)", xticks=[], yticks=[])
        image_ax.title.set_fontsize(8)
        top = int(p.argmax())
        bar_ax.bar(range(k), 100 * p, color=["tab:green" if c == top else "tab:gray" for c in range(k)])
        bar_ax.set_xticks(range(k), classes, fontsize=8, rotation=45 * (max(map(len, classes)) > 2))
        bar_ax.set(ylim=(0, 100), ylabel="probability (%)", xlabel="class",
                   title=f"prediction {classes[top]} ({100 * p[top]:.1f}%)")
        bar_ax.title.set_fontsize(9)
    return save(fig, path)


def plot_run(run_dir: Path, test_split: Split | None = None, data_dir: Path | None = None,
             console: Console | None = None) -> list[Path]:
    """Write the plots of the run in `run_dir`; returns their paths. curves.png and weights.png need only the run;
    the other three need the test set: without `test_split`, the run's test set is loaded (from `data_dir` first
    when given; `console` hears where it came from), and when it cannot be, those three are skipped and `console`
    hears why."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.exists():
        raise GpunetError(f"{run_dir}: no metrics.json; is it a gpunet run directory?")
    metrics = read_json(path, MAX_METRICS, "metrics file")
    if not isinstance(metrics, dict) or not metrics.get("history"):
        raise GpunetError(f"{run_dir}: the run has no finished epoch to plot")
    history, best_epoch = metrics["history"], metrics.get("best_epoch")
    problem = history_problem(history)
    if problem is not None:
        raise GpunetError(f"{path}: damaged metrics file: {problem}")
    if best_epoch is not None and not (is_int(best_epoch) and 0 <= best_epoch <= len(history)):
        raise GpunetError(f"{path}: damaged metrics file: best_epoch = {best_epoch!r:.60} is not an epoch of "
                          "its history")
    cpu = get_backend("cpu")
    net, header = load_model(run_dir / "model.npz", cpu)
    dataset, classes = header["dataset"], header["classes"]
    paths = [curves(metrics["history"], run_dir / "curves.png", metrics.get("best_epoch")),
             weights(net.state_dict()["W1"], run_dir / "weights.png")]
    if test_split is None:
        try:
            test_split = load_test(dataset, data_dir, console)
        except GpunetError as e:
            if console is not None:
                console.print(f"warning: skipped {', '.join(TEST_PLOTS)} (drawn from the {dataset} test set): {e}",
                              markup=False, highlight=False)
            return paths
    data = DeviceData(cpu, test_split)
    scores = evaluate(net, data, probabilities=True)
    images = data.X.reshape(test_split.images.shape)  # (n, 28, 28) in [0, 1]
    y = test_split.labels.astype(np.int64)
    probs, cm = scores.probs, scores.confusion  # (n, k), (k, k): host arrays on the cpu backend
    return paths + [
        confusion(cm, classes, run_dir / "confusion.png"),
        predictions(images, y, probs, classes, run_dir / "predictions.png"),
        mistakes(images, y, probs, classes, run_dir / "mistakes.png"),
    ]


def sweep(panels: dict[str, list[tuple[str, list[float], float, float]]], path: Path) -> Path:
    """Validation accuracy against each swept key: one panel per key; at each value, every run as a dot (the
    seeds' spread) and the best setting with that value as its mean +- std over seeds."""
    fig = Figure(figsize=(0.6 + 4.2 * len(panels), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, (key, rows) in zip(axes, panels.items()):
        for x, (_, accs, mean, std) in enumerate(rows):
            jitter = np.linspace(-0.12, 0.12, len(accs)) if len(accs) > 1 else np.zeros(len(accs))
            ax.scatter(x + jitter, [100 * a for a in accs], s=14, alpha=0.5, color="tab:blue",
                       label="each run" if x == 0 else None)
            ax.errorbar(x, 100 * mean, yerr=100 * std, fmt="o", color="tab:red", capsize=5,
                        label="best setting: mean +- std over seeds" if x == 0 else None)
        ax.set_xticks(range(len(rows)), [label for label, *_ in rows])
        ax.set(xlabel=key, title=f"validation accuracy vs {key}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(fontsize=8)
    return save(fig, path)
