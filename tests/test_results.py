"""Issue 4: model files, checkpoints and exact resume, evaluate, predict, plots."""

import json
import signal

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from gpunet import train as train_module
from gpunet.backend import get_backend
from gpunet.cli import app
from gpunet.data import load_mnist, to_features
from gpunet.errors import GpunetError
from gpunet.model import MLP
from gpunet.store import load_checkpoint, load_model, save_model
from gpunet.train import CtrlC

runner = CliRunner()
PLOTS = ("curves.png", "confusion.png", "predictions.png", "mistakes.png", "weights.png")


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def weights(run_dir):
    with np.load(run_dir / "model.npz") as z:
        return {k: z[k] for k in z.files if k != "meta"}


def history(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def test_split():
    return load_mnist()[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short run on 5,000 samples, with its plots drawn at the end of `gpunet train`."""
    out = tmp_path_factory.mktemp("run") / "run"
    result = cli("train", "--device", "cpu", "--epochs", 3, "--limit", 5000, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# --- checkpoints and resume -------------------------------------------------------------------------


def interrupt_at_call(monkeypatch, n):
    """Send a real SIGINT (Ctrl-C) during the n-th learning-rate lookup, i.e. inside a training step."""
    calls = []
    real = train_module.learning_rate

    def learning_rate(*args):
        calls.append(1)
        if len(calls) == n:
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(train_module, "learning_rate", learning_rate)


def test_interrupted_and_resumed_run_matches_the_uninterrupted_one_bit_for_bit(tmp_path, monkeypatch):
    common = ("train", "--device", "cpu", "--epochs", 3, "--limit", 1000, "--batch-size", 100, "--no-plots")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli(*common, "--out", whole).exit_code == 0

    interrupt_at_call(monkeypatch, 15)  # 10 steps per epoch (+1 lookup for the log): epoch 2, step 4
    stopped = cli(*common, "--out", split)
    assert stopped.exit_code == 130, stopped.output
    assert f"gpunet train --resume {split}" in stopped.output
    ckpt = load_checkpoint(split / "checkpoint.npz")
    assert (ckpt.meta["epoch"], ckpt.meta["step"]) == (1, 4)
    assert json.loads((split / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.undo()

    resumed = cli("train", "--device", "cpu", "--resume", split, "--no-plots")
    assert resumed.exit_code == 0, resumed.output
    a, b = weights(whole), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert history(whole) == history(split)
    opt_a, opt_b = load_checkpoint(whole / "checkpoint.npz").optimizer, load_checkpoint(split / "checkpoint.npz").optimizer
    for k in opt_a:
        assert np.array_equal(opt_a[k], opt_b[k]), k


def test_raising_epochs_on_resume_continues_like_a_longer_run(tmp_path):
    """With a constant learning rate (the seed recipe), 2 epochs + 1 more on resume equal 3 epochs."""
    common = ("train", "--config", "configs/seed.toml", "--device", "cpu", "--limit", 500, "--no-plots")
    assert cli(*common, "--epochs", 3, "--out", tmp_path / "three").exit_code == 0
    assert cli(*common, "--epochs", 2, "--out", tmp_path / "two", "--checkpoint-every", 1).exit_code == 0
    result = cli("train", "--device", "cpu", "--resume", tmp_path / "two", "--epochs", 3, "--no-plots")
    assert result.exit_code == 0, result.output
    a, b = weights(tmp_path / "three"), weights(tmp_path / "two")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert history(tmp_path / "three") == history(tmp_path / "two")


@pytest.mark.parametrize("args, message", [
    (("--lr", 0.5), "differs from the run's lr"),
    (("--epochs", 1), "has already trained 2 epochs"),
    ((), "completed all 2 epochs"),
    (("--out", "elsewhere"), "drop --config and --out"),
])
def test_resume_refuses_a_conflicting_request(tmp_path, args, message):
    run_dir = tmp_path / "run"
    base = ("train", "--device", "cpu", "--epochs", 2, "--limit", 300, "--no-plots")
    assert cli(*base, "--out", run_dir).exit_code == 0
    before = (run_dir / "checkpoint.npz").read_bytes()
    result = cli("train", "--device", "cpu", "--resume", run_dir, "--no-plots", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert (run_dir / "checkpoint.npz").read_bytes() == before


def test_resume_without_a_checkpoint_is_a_clean_error(tmp_path):
    result = cli("train", "--device", "cpu", "--resume", tmp_path)
    assert result.exit_code == 2
    assert "no checkpoint to resume from" in result.output


def test_first_ctrl_c_asks_to_stop_and_second_aborts():
    with CtrlC() as ctrl_c:
        assert not ctrl_c.requested
        signal.raise_signal(signal.SIGINT)
        assert ctrl_c.requested
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- model files ----------------------------------------------------------------------------------


def test_model_file_round_trip_across_backends(backend, tmp_path):
    """Saved on `backend` (cuda too, when there is a GPU), loaded on cpu and on `backend`: the same numbers."""
    net = MLP(backend, (784, 32, 16, 10), seed=3)
    path = tmp_path / "model.npz"
    save_model(path, net, {"dataset": "mnist", "test_accuracy": 0.5})
    X = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    expected = backend.to_numpy(net.predict_proba(backend.asarray(X)))
    for target in {"cpu": get_backend("cpu"), backend.name: backend}.values():
        loaded, header = load_model(path, target)
        assert loaded.sizes == (784, 32, 16, 10) and loaded.backend is target
        assert header["sizes"] == [784, 32, 16, 10] and header["test_accuracy"] == 0.5 and header["format"] == 1
        for k, v in net.state_dict().items():
            assert np.array_equal(target.to_numpy(loaded.params[k]), v)
        got = target.to_numpy(loaded.predict_proba(target.asarray(X)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_model_with_wrong_shapes_is_refused(tmp_path):
    meta = np.asarray(json.dumps({"format": 1, "kind": "model", "sizes": [784, 128, 10]}))
    bad = {"W1": np.zeros((784, 128), np.float32), "b1": np.zeros(64, np.float32),
           "W2": np.zeros((128, 10), np.float32), "b2": np.zeros(10, np.float32)}
    np.savez(tmp_path / "shapes.npz", meta=meta, **bad)
    with pytest.raises(GpunetError, match="shapes.npz: damaged model file: W1 .* and b1"):
        load_model(tmp_path / "shapes.npz", get_backend("cpu"))
    meta = np.asarray(json.dumps({"format": 1, "kind": "model", "sizes": [784, 64, 10]}))
    np.savez(tmp_path / "header.npz", meta=meta, **{**bad, "b1": np.zeros(128, np.float32)})
    with pytest.raises(GpunetError, match="header says"):
        load_model(tmp_path / "header.npz", get_backend("cpu"))


@pytest.mark.parametrize("sizes, fragment", [((100, 16, 10), "maps 100 inputs to 10 classes"),
                                             ((784, 16, 12), "maps 784 inputs to 12 classes")])
def test_model_that_does_not_fit_the_data_is_refused(tmp_path, sizes, fragment):
    net = MLP(get_backend("cpu"), sizes)
    save_model(tmp_path / "odd.npz", net, {"dataset": "mnist"})
    with pytest.raises(GpunetError, match=f"odd.npz: the model {fragment}; a gpunet model maps 784 pixels to the 10"):
        load_model(tmp_path / "odd.npz", get_backend("cpu"))


def test_damaged_or_foreign_files_get_one_clean_line(tmp_path, run):
    damaged = tmp_path / "damaged.npz"
    data = (run / "model.npz").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    for path, message in [(damaged, "not a readable gpunet model file"), (not_zip, "not a readable gpunet model"),
                          (run / "checkpoint.npz", "checkpoint file, not a model file"),
                          (tmp_path / "missing.npz", "model file not found")]:
        result = cli("evaluate", path, "--device", "cpu")
        assert result.exit_code == 2, (path, result.output)
        assert result.output.strip().splitlines() == [f"error: {path}: " + result.output.split(f"{path}: ", 1)[1]
                                                       .strip()]
        assert message in result.output


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_confusion_matrix_matches_accuracy(run, test_split):
    result = cli("evaluate", run, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cm = np.array(report["confusion"])
    assert cm.shape == (10, 10) and cm.sum() == len(test_split.labels) == report["samples"]
    assert np.trace(cm) / cm.sum() == pytest.approx(report["accuracy"], abs=1e-12)
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert [r["support"] for r in report["per_class"]] == np.bincount(test_split.labels).tolist()
    for k, r in enumerate(report["per_class"]):
        assert r["recall"] == pytest.approx(cm[k, k] / cm[k].sum())
        assert r["precision"] == pytest.approx(cm[k, k] / cm[:, k].sum())
        assert r["f1"] == pytest.approx(2 * r["precision"] * r["recall"] / (r["precision"] + r["recall"]))

    table = cli("evaluate", run, "--device", "cpu")
    assert table.exit_code == 0
    assert f"accuracy {100 * report['accuracy']:.2f}%" in table.stdout
    assert "confusion matrix (rows: true class, columns: predicted class)" in table.stdout


# --- predict --------------------------------------------------------------------------------------


def test_predict_on_large_inverted_pngs_agrees_with_the_arrays(run, test_split, tmp_path):
    """MNIST test digits drawn large, black ink on white (and some as colour JPEGs), read back by predict."""
    n = 100
    net, _ = load_model(run, get_backend("cpu"))
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
    result = cli("predict", run, *paths, "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["path"] for a in answers] == [str(p) for p in paths]
    got = np.array([a["class_index"] for a in answers])
    assert (got == expected).mean() >= 0.95
    for a in answers:
        assert len(a["probabilities"]) == 10 and sum(a["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert a["prediction"] == max(a["probabilities"], key=a["probabilities"].get)


def test_predict_reports_bad_files_and_still_runs_the_others(run, test_split, tmp_path):
    good = tmp_path / "seven.png"
    Image.fromarray(255 - test_split.images[0]).resize((100, 100)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    show = tmp_path / "show.png"
    result = cli("predict", run, text, good, empty, "--show", show)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert f"error: {text}: not a PNG or JPEG image; give a PNG or JPEG of a digit" in lines
    assert f"error: {empty}: empty file, not an image" in lines
    top3 = [line for line in lines if line.startswith(f"{good}: ")]
    assert len(top3) == 1 and top3[0].count("%") == 3
    assert "Traceback" not in result.output
    with Image.open(show) as image:
        assert image.format == "PNG" and image.width >= 300


# --- plots ----------------------------------------------------------------------------------------


def test_train_draws_every_plot_as_a_readable_png(run):
    for name in PLOTS:
        path = run / name
        assert path.stat().st_size > 10_000, name
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 300 <= image.width <= 3000 and 300 <= image.height <= 3000, (name, image.size)
            assert np.asarray(image.convert("L")).std() > 10, name  # not a blank canvas


def test_plot_command_redraws_and_no_plots_skips(tmp_path, run):
    bare = tmp_path / "bare"
    assert cli("train", "--device", "cpu", "--epochs", 1, "--limit", 300, "--no-plots", "--out", bare).exit_code == 0
    assert not any((bare / name).exists() for name in PLOTS)
    result = cli("plot", bare)
    assert result.exit_code == 0, result.output
    assert all((bare / name).stat().st_size > 10_000 for name in PLOTS)
    missing = cli("plot", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "no metrics.json" in missing.output
