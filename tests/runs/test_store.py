"""Model files: the same numbers across backends, wrong shapes and models that do not fit the data refused,
damaged, foreign or missing files reported in one clean line."""

import json

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.errors import GpunetError
from gpunet.core.model import MLP
from gpunet.core.optim import make_optimizer
from gpunet.runs.config import MAX_EPOCHS, load_config
from gpunet.runs.store import Checkpoint, load_checkpoint, load_model, save_checkpoint, save_model
from helpers import cli


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


def test_damaged_or_foreign_files_get_one_clean_line(tmp_path, trained_run):
    damaged = tmp_path / "damaged.npz"
    data = (trained_run / "model.npz").read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    not_zip = tmp_path / "text.npz"
    not_zip.write_text("hello")
    for path, message in [(damaged, "not a readable gpunet model file"), (not_zip, "not a readable gpunet model"),
                          (trained_run / "checkpoint.npz", "checkpoint file, not a model file"),
                          (tmp_path / "missing.npz", "model file not found")]:
        result = cli("evaluate", path, "--device", "cpu")
        assert result.exit_code == 2, (path, result.output)
        assert result.output.strip().splitlines() == [f"error: {path}: " + result.output.split(f"{path}: ", 1)[1]
                                                       .strip()]
        assert message in result.output


# Checkpoints of long runs -----------------------------------------------------------------------------------------

def checkpoint_of(epochs: int, validation: bool = True) -> Checkpoint:
    """A checkpoint of a 784-4-10 run after `epochs` epochs (its history made up, with validation scores)."""
    cpu = get_backend("cpu")
    cfg = load_config(overrides={"hidden": [4], "epochs": epochs + 1, "val_size": 100 if validation else 0})
    net = MLP(cpu, (784, 4, 10), seed=0)
    opt = make_optimizer(cfg.optimizer, cpu, net.params, cfg.momentum)
    rng = np.random.default_rng(epochs)
    history = [{"epoch": e, "train_loss": float(rng.random()), "train_accuracy": float(rng.random()),
                **({"val_loss": float(rng.random()), "val_accuracy": float(rng.random())} if validation else {}),
                "seconds": float(rng.random()), "lr": float(rng.random())} for e in range(1, epochs + 1)]
    kept = (epochs + 1) // 2 if validation else epochs
    best = ({"epoch": kept, "val_accuracy": history[kept - 1]["val_accuracy"], "val_loss": history[kept - 1]["val_loss"]}
            if validation else {"epoch": kept, "val_accuracy": None, "val_loss": None})
    meta = {"config": cfg.as_dict(), "dataset": "mnist", "train_samples": 1000,
            "validation": {"samples": 100, "seed": 0, "stratified": True, "indices_sha256": "ab" * 32}
            if validation else None, "history": history, "epoch": epochs, "step": 0, "epoch_seconds": 0.0,
            "best": best, "rng": {"shuffle_seed": [0, epochs + 1]}}
    return Checkpoint(net.state_dict(), opt.state_dict(), {}, meta, net.state_dict() if validation else {})


@pytest.mark.parametrize("epochs, validation", [(1, True), (6_000, True), (30_000, True), (20_000, False)])
def test_checkpoints_of_long_runs_load_with_their_whole_history(tmp_path, epochs, validation):
    """The history is an array, not JSON in the header, so no run is too long to resume."""
    ckpt = checkpoint_of(epochs, validation)
    save_checkpoint(tmp_path / "checkpoint.npz", ckpt)
    with np.load(tmp_path / "checkpoint.npz") as z:
        assert len(str(z["meta"])) < 5_000  # the header does not grow with the run
    loaded = load_checkpoint(tmp_path / "checkpoint.npz")
    assert loaded.meta["history"] == ckpt.meta["history"]  # bit for bit, epochs as ints
    assert loaded.meta["best"] == ckpt.meta["best"] and loaded.meta["epoch"] == epochs


def test_format_1_checkpoints_with_the_history_in_the_header_still_load(tmp_path):
    ckpt = checkpoint_of(30)
    save_checkpoint(tmp_path / "checkpoint.npz", ckpt)
    with np.load(tmp_path / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files if k not in ("meta", "history")}
        header = json.loads(str(z["meta"]))
    del header["history_columns"]
    header.update(format=1, history=ckpt.meta["history"])
    np.savez(tmp_path / "old.npz", **arrays, meta=np.asarray(json.dumps(header)))
    assert load_checkpoint(tmp_path / "old.npz").meta["history"] == ckpt.meta["history"]


def test_a_run_longer_than_a_checkpoint_can_hold_is_refused_before_it_starts(tmp_path):
    result = cli("train", "--epochs", MAX_EPOCHS + 1, "--out", tmp_path / "run")
    assert result.exit_code == 2 and f"<= {MAX_EPOCHS:,}" in result.output
    assert not (tmp_path / "run").exists()
