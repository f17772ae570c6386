"""Hostile files: damaged or crafted model and checkpoint files (a seeded fuzz and a schema check), JSON that
never holds NaN, training sizes checked before the data loads, a full disk, and gzip bombs in the data."""

import errno
import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gpunet.data import load as data_module
from gpunet import files as files_module
from gpunet.runs import train as train_module
from gpunet.core.backend import get_backend
from gpunet.apps.cli import app
from gpunet.data.datasets import DATASETS
from gpunet.errors import GpunetError
from gpunet.files import json_text
from gpunet.data.idx import read_bytes
from gpunet.data.locate import repo_data
from gpunet.core.model import MLP
from gpunet.runs.plots import curves
from gpunet.runs.store import BUDGETS, MAX_PARAMETERS, load_checkpoint, load_model, save_model

from helpers import assert_clean_error, mutate

CPU = get_backend("cpu")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short Adam run: its model.npz and checkpoint.npz are the seeds of the fuzz."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    result = cli("train", "--device", "cpu", "--epochs", 2, "--limit", 500, "--batch-size", 100, "--hidden", 16,
                 "--optimizer", "adam", "--no-plots", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def npz_parts(path: Path, history_in_header: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and header of a gpunet file; a checkpoint's history moved into its header (format 1, still
    read) unless `history_in_header` is False, so the tests can edit its rows as JSON."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays.pop("meta")))
    if "history" in arrays and history_in_header:
        columns = header.pop("history_columns")
        header.update(format=1, history=[{c: int(v) if c == "epoch" else v for c, v in zip(columns, row)}
                                         for row in arrays.pop("history").tolist()])
    return arrays, header


def write_npz(path: Path, arrays: dict, header) -> Path:
    np.savez(path, **arrays, meta=np.asarray(json.dumps(header)))
    return path


def npy_headers(data: bytes) -> list[int]:
    """Offsets inside each member's .npy header (dtype, shape) and the JSON header after it."""
    return [i + k for i in range(len(data)) if data[i:i + 6] == b"\x93NUMPY" for k in range(8, 80)]


@pytest.mark.parametrize("name, load, n", [
    ("model.npz", lambda p: load_model(p, CPU), 250),
    ("checkpoint.npz", load_checkpoint, 200),
])
def test_fuzzed_files_load_or_give_one_line(run, tmp_path, name, load, n):
    rng = np.random.default_rng(11)
    good = (run / name).read_bytes()
    loaded = refused = 0
    for i in range(n):
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(mutate(good, rng, npy_headers))
        try:
            load(path)
            loaded += 1
        except GpunetError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            refused += 1
    assert refused > n // 2 and loaded + refused == n


@pytest.mark.parametrize("weights, says", [
    (np.array(["a"] * 16), "<U1"),
    (np.array([b"x"] * 16), "S1"),
    (np.zeros(16, dtype=[("a", "f4")]), "[('a', '<f4')]"),
    (np.float32(1), "do not follow"),
    (np.arange(16), "int64"),
    (np.ones(16, dtype=bool), "bool"),
    (np.zeros(16, dtype="datetime64[s]"), "datetime64"),
    (np.ones(16, dtype=np.float16), "float16"),
    (np.full(16, np.nan, dtype=np.float32), "NaN or infinite"),
    (np.full(16, np.inf), "NaN or infinite"),
    (np.zeros((16, 1), dtype=np.float32), "do not follow"),
], ids=["str", "bytes", "structured", "0-d", "int", "bool", "datetime", "float16", "nan", "inf", "2-d"])
def test_weights_of_any_other_kind_are_refused(run, tmp_path, weights, says):
    arrays, header = npz_parts(run / "model.npz")
    arrays["b1"] = weights
    path = write_npz(tmp_path / "model.npz", arrays, header)
    with pytest.raises(GpunetError, match="model.npz: ") as e:
        load_model(path, CPU)
    assert says in str(e.value)


def test_a_declared_giant_is_refused_before_anything_is_read(tmp_path):
    """A 784-700000-10 net declared in .npy headers of a small file: refused from the headers alone."""
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as z:
        for name, shape in [("W1", (784, 700_000)), ("b1", (700_000,)), ("W2", (700_000, 10)), ("b2", (10,))]:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
            z.writestr(f"{name}.npy", buf.getvalue())  # a header and no data
        z.writestr("meta.npy", b"")
    with pytest.raises(GpunetError, match=r"declares [0-9,]+ numbers, over the limit") as e:
        load_model(path, CPU)
    assert f"{MAX_PARAMETERS:,} parameters" in str(e.value)


def declared(path: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """A .npz whose members declare `shapes` in their .npy headers and hold no data."""
    with zipfile.ZipFile(path, "w") as z:
        for name, shape in shapes.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
            z.writestr(f"{name}.npy", buf.getvalue())
        z.writestr("meta.npy", b"")
    return path


@pytest.mark.parametrize("width", [64_000, 100_000, 250_000])  # 50.8, 79.5 and 198.8 million numbers
def test_a_model_file_may_declare_no_more_numbers_than_a_net_holds(tmp_path, width):
    shapes = {"W1": (784, width), "b1": (width,), "W2": (width, 10), "b2": (10,)}
    assert BUDGETS["model"] < sum(np.prod(s) for s in shapes.values()) < BUDGETS["checkpoint"]
    with pytest.raises(GpunetError, match=f"over the limit of {BUDGETS['model']:,} for a model file"):
        load_model(declared(tmp_path / "model.npz", shapes), CPU)
    with pytest.raises(GpunetError) as e:  # a checkpoint may hold that many: refused later, for other reasons
        load_checkpoint(declared(tmp_path / "checkpoint.npz", {f"param.{k}": v for k, v in shapes.items()}))
    assert "over the limit" not in str(e.value)


@pytest.mark.parametrize("change, says", [
    (lambda h: h.update(config=list(h["config"].items())), "config = "),
    (lambda h: h.pop("epoch"), "no epoch"),
    (lambda h: h.update(epoch="2"), "epoch = '2'"),
    (lambda h: h.update(step=-1), "step = -1"),
    (lambda h: h.update(history=["a", "b"]), "history row 1 "),
    (lambda h: h["history"][0].update(train_loss=None), "history row 1 "),
    (lambda h: h.update(history=h["history"][:1]), "history has 1 rows"),
    (lambda h: h["config"].pop("lr"), "config has keys"),
    (lambda h: h["config"].update(lr=-1), "lr = -1"),
    (lambda h: h["config"].update(optimizer="gd"), "optimizer state"),
    (lambda h: h["config"].update(hidden=[32]), "do not match hidden"),
    (lambda h: h.update(dataset="cifar"), "dataset 'cifar'"),
    (lambda h: h.update(train_samples=True), "train_samples = True"),
    (lambda h: h.update(sizes="784-16-10"), "header says"),
], ids=["config-list", "no-epoch", "epoch-str", "step<0", "history-strs", "history-null", "history-short",
        "config-missing", "config-bad-lr", "other-optimizer", "other-hidden", "dataset", "samples-bool", "sizes-str"])
def test_checkpoint_fields_are_checked(run, tmp_path, change, says):
    arrays, header = npz_parts(run / "checkpoint.npz")
    change(header)
    path = write_npz(tmp_path / "checkpoint.npz", arrays, header)
    with pytest.raises(GpunetError, match="checkpoint.npz: ") as e:
        load_checkpoint(path)
    assert says in str(e.value)


def test_optimizer_state_of_the_wrong_shape_is_refused(run, tmp_path):
    arrays, header = npz_parts(run / "checkpoint.npz")
    arrays["opt.m.W1"] = arrays["opt.m.W1"][:-1]
    path = write_npz(tmp_path / "checkpoint.npz", arrays, header)
    with pytest.raises(GpunetError, match="optimizer state"):
        load_checkpoint(path)


def test_resume_from_a_bad_checkpoint_is_one_line_before_training(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    copy.mkdir()
    arrays, header = npz_parts(run / "checkpoint.npz")
    header["history"] = [{"epoch": 1}] * len(header["history"])  # the old code failed only after an epoch
    write_npz(copy / "checkpoint.npz", arrays, header)
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    result = cli("train", "--resume", copy, "--epochs", 4)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [f"error: {copy / 'checkpoint.npz'}: damaged checkpoint file: "
                                                  "history rows have no train_loss, train_accuracy, seconds, "
                                                  "val_accuracy, val_loss"]


# JSON output ----------------------------------------------------------------------------------------------------

def strict(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def test_json_text_never_holds_nan():
    text = json_text({"a": float("nan"), "b": [float("inf"), 1.5, -float("inf")], "c": np.float64("nan")})
    assert strict(text) == {"a": None, "b": [None, 1.5, None], "c": None}


@pytest.mark.filterwarnings("ignore:overflow encountered in matmul:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # the overflow this test makes
def test_predict_and_evaluate_json_are_strict_even_when_the_net_overflows(tmp_path):
    net = MLP(CPU, (784, 16, 10), seed=0)
    net.params["W1"][...] = 1e37  # finite weights whose output overflows to NaN
    save_model(tmp_path / "model.npz", net, {"dataset": "mnist", "epochs": 1})
    from PIL import Image, ImageDraw

    image = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(image).line([(10, 10), (50, 50)], fill=0, width=6)
    image.save(tmp_path / "digit.png")
    predicted = cli("predict", tmp_path / "model.npz", tmp_path / "digit.png", "--json")
    assert predicted.exit_code == 0, predicted.output
    assert strict(predicted.stdout)[0]["probabilities"]["0"] is None
    evaluated = cli("evaluate", tmp_path / "model.npz", "--device", "cpu", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert strict(evaluated.stdout[evaluated.stdout.index("{"):])["loss"] is None


# Training: sizes, memory, a full disk ------------------------------------------------------------------------

@pytest.fixture()
def no_data(monkeypatch):
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: pytest.fail("the data was loaded"))


def test_absurd_hidden_width_is_one_line_before_the_data_loads(tmp_path, no_data):
    result = cli("train", "--hidden", "99999999999999999999", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --hidden 99999999999999999999 makes a net of 79,499,999,999,999,999,999,215 parameters, over the "
        f"limit of {MAX_PARAMETERS:,}; choose smaller hidden widths"]
    assert not (tmp_path / "run").exists()


def test_a_run_bigger_than_memory_is_one_line_before_the_data_loads(tmp_path, no_data, monkeypatch):
    monkeypatch.setattr(train_module, "available_memory", lambda: 1_000_000_000)
    result = cli("train", "--hidden", "4096", "--batch-size", "full", "--out", tmp_path / "run")
    assert result.exit_code == 2
    line, = result.output.strip().splitlines()
    assert line.startswith("error: this run needs about ") and "1.0 GB is available" in line


def enospc(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_model(path, MLP(CPU, (784, 16, 10)), {"dataset": "mnist"})
    before = path.read_bytes()
    monkeypatch.setattr(files_module.os, "fsync", enospc)
    with pytest.raises(GpunetError) as e:
        save_model(path, MLP(CPU, (784, 16, 10), seed=1), {"dataset": "mnist"})
    assert str(e.value) == (f"{path}: cannot write (No space left on device) (the disk is full: free some space); "
                            "the previous version is kept")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_train_on_a_disk_that_fills_up(tmp_path, monkeypatch):
    """The second epoch's model.npz cannot be written: one line naming it, the first epoch's model intact."""
    real, calls = files_module.os.fsync, []

    def fsync(fd):
        calls.append(fd)
        return enospc() if len(calls) >= 2 else real(fd)

    monkeypatch.setattr(files_module.os, "fsync", fsync)
    out = tmp_path / "run"
    result = cli("train", "--device", "cpu", "--epochs", 3, "--limit", 500, "--batch-size", 100, "--no-plots",
                 "--out", out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: {out / 'model.npz'}: cannot write (No space left on device)" in result.output
    net, header = load_model(out / "model.npz", CPU)
    assert header["epochs"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# Data -------------------------------------------------------------------------------------------------------

def test_registry_sizes_are_the_real_decompressed_sizes():
    for f in DATASETS["mnist"].files:
        with gzip.open(repo_data() / "mnist" / f"{f.name}.gz") as g:
            assert len(g.read()) == f.size, f.name
    for ds in DATASETS.values():
        n_train, n_test = 60_000, 10_000
        assert [f.size for f in ds.files] == [16 + n_train * 784, 8 + n_train, 16 + n_test * 784, 8 + n_test]


def test_a_gzip_bomb_expands_no_further_than_the_known_size(tmp_path):
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    with gzip.open(bomb, "wb") as g:
        for _ in range(64):
            g.write(bytes(1 << 20))  # 64 MB of zeros in ~64 kB
    assert bomb.stat().st_size < 200_000
    with pytest.raises(GpunetError, match="holds more than the 60,008 bytes"):
        read_bytes(bomb, 60_008)
    assert len(read_bytes(bomb, 64 << 20)) == 64 << 20


def test_data_verify_refuses_a_bomb_in_a_data_dir(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for f in DATASETS["mnist"].files:
        (folder / f"{f.name}.gz").write_bytes((repo_data() / "mnist" / f"{f.name}.gz").read_bytes())
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as g:
        for _ in range(64):
            g.write(bytes(1 << 20))
    result = cli("data", "verify", "mnist", "--data-dir", tmp_path)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "holds more than the 60,008 bytes" in result.output


ODD_VALUES = [None, True, -1, 0, 10 ** 400, 1e308, -0.5, "", "x" * 300, [], [1, "a"], {}, {"a": [None]}, [[[]]],
              float("nan"), float("inf"), 784, [784, 16, 10], {"epoch": 1}]


def fuzz_header(header: dict, rng: np.random.Generator, values: list = ODD_VALUES, most: int = 3) -> dict:
    """`header` with one to `most` values (at any depth) replaced by one of `values`, or a key dropped."""
    header = json.loads(json.dumps(header))
    for _ in range(int(rng.integers(1, most + 1))):
        node = header
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = keys[int(rng.integers(len(keys)))]
            if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.5:
                node = node[key]
                continue
            if isinstance(node, dict) and rng.random() < 0.15:
                del node[key]
            else:
                node[key] = values[int(rng.integers(len(values)))]
            break
    return header


@pytest.mark.parametrize("name, load", [("model.npz", lambda p: load_model(p, CPU)),
                                        ("checkpoint.npz", load_checkpoint)])
def test_fuzzed_headers_load_or_give_one_line(run, tmp_path, name, load):
    rng = np.random.default_rng(12)
    arrays, header = npz_parts(run / name)
    refused = 0
    for i in range(150):
        path = write_npz(tmp_path / f"{i}-{name}", arrays, fuzz_header(header, rng))
        try:
            load(path)
        except GpunetError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            refused += 1
    assert refused > 75


@pytest.mark.parametrize("args, what", [
    (["train", "--device", "cpu", "--epochs", "1"], "cannot create the run directory"),
    (["sweep", "--device", "cpu", "--epochs", "1", "--lr", "0.1,0.2"], "cannot create the sweep's folder"),
])
def test_a_folder_that_cannot_be_made_is_one_line(tmp_path, args, what):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_error(cli(*args, "--out", blocker / "run"), f"{blocker / 'run'}: {what}")
    assert blocker.read_text() == "not a folder"


# Arrays of any shape, in every loader ------------------------------------------------------------------------------

SHAPES = {"0-d": (), "1-d": (16,), "3-d": (784, 16, 1), "empty": (0, 16), "transposed": (16, 784)}


@pytest.mark.parametrize("name", ["W1", "b1", "W2", "b2"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_weights_of_any_other_shape_are_one_line_in_every_loader(run, tmp_path, name, shape):
    model_arrays, model_header = npz_parts(run / "model.npz")
    ckpt_arrays, ckpt_header = npz_parts(run / "checkpoint.npz", history_in_header=False)
    if model_arrays[name].shape == shape:
        pytest.skip("the right shape")
    bad = np.ones(shape, np.float32)
    loaders = [
        (lambda p: load_model(p, CPU), write_npz(tmp_path / "model.npz", {**model_arrays, name: bad}, model_header)),
        (load_checkpoint, write_npz(tmp_path / "checkpoint.npz", {**ckpt_arrays, f"param.{name}": bad}, ckpt_header)),
        (load_checkpoint, write_npz(tmp_path / "best.npz", {**ckpt_arrays, f"best.{name}": bad}, ckpt_header)),
        (load_checkpoint, write_npz(tmp_path / "opt.npz", {**ckpt_arrays, f"opt.m.{name}": bad}, ckpt_header)),
    ]
    for load, path in loaders:
        with pytest.raises(GpunetError, match=f"{path.name}: "):
            load(path)
    with pytest.raises(ValueError, match="W1|W2"):
        MLP.from_state_dict(CPU, {**{k: v for k, v in model_arrays.items()}, name: bad})
    assert_clean_error(cli("evaluate", tmp_path / "model.npz", "--device", "cpu"), "model.npz")


# Checkpoints checked whole before any training ---------------------------------------------------------------------

LIES = {
    "best-null-accuracy": lambda h, a: h["best"].update(val_accuracy=None),
    "best-null-loss": lambda h, a: h["best"].update(val_loss=None),
    "best-str-accuracy": lambda h, a: h["best"].update(val_accuracy="0.9"),
    "best-extra-key": lambda h, a: h["best"].update(weights=[1, 2]),
    "best-missing-key": lambda h, a: h["best"].pop("val_loss"),
    "best-other-scores": lambda h, a: h["best"].update(val_accuracy=0.123),
    "best-epoch-0-with-scores": lambda h, a: h["best"].update(epoch=0),
    "best-epoch-past": lambda h, a: h["best"].update(epoch=h["epoch"] + 1),
    "best-weights-missing": lambda h, a: [a.pop(k) for k in list(a) if k.startswith("best.")],
    "validation-null": lambda h, a: h.update(validation=None),
    "validation-no-digest": lambda h, a: h["validation"].pop("indices_sha256"),
    "validation-digest-int": lambda h, a: h["validation"].update(indices_sha256=7),
    "validation-list": lambda h, a: h.update(validation=[1]),
    "val-size-0": lambda h, a: h["config"].update(val_size=0),
    "step-past-epoch": lambda h, a: h.update(step=10 ** 6),
    "history-out-of-order": lambda h, a: h["history"].reverse(),
    "history-epoch-float": lambda h, a: h["history"][0].update(epoch=1.5),
    "history-accuracy-over-1": lambda h, a: h["history"][1].update(train_accuracy=3.0),
    "history-loss-negative": lambda h, a: h["history"][0].update(val_loss=-1.0),
    "history-row-without-validation": lambda h, a: h["history"][1].pop("val_accuracy"),
    "history-rows-differ": lambda h, a: h["history"][1].update(extra=1.0),
    "history-dict": lambda h, a: h.update(history={"1": {}}),
    "sums-without-step": lambda h, a: a.update({"sum.loss_sum": np.float64(1), "sum.correct": np.int64(1)}),
    "epoch-seconds-negative": lambda h, a: h.update(epoch_seconds=-5.0),
    "format-bool": lambda h, a: h.update(format=True),
}


@pytest.mark.parametrize("change", list(LIES.values()), ids=list(LIES))
def test_a_checkpoint_that_lies_is_refused_when_it_is_loaded(run, tmp_path, change):
    arrays, header = npz_parts(run / "checkpoint.npz")
    change(header, arrays)
    path = write_npz(tmp_path / "checkpoint.npz", arrays, header)
    with pytest.raises(GpunetError, match="checkpoint.npz: ") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("change", [
    lambda h, a: h.update(history_columns=h["history_columns"][:-1]),
    lambda h, a: h.update(history_columns=[1] * len(h["history_columns"])),
    lambda h, a: h.update(history_columns=["epoch"] * len(h["history_columns"])),
    lambda h, a: h.pop("history_columns"),
    lambda h, a: a.update(history=a["history"][:, :2]),
    lambda h, a: a.update(history=a["history"][0]),
    lambda h, a: a.update(history=a["history"][:1]),
    lambda h, a: a.pop("history"),
    lambda h, a: h.update(history=[]),
], ids=["columns-short", "columns-ints", "columns-repeated", "no-columns", "array-narrow", "array-1-d",
        "array-short", "no-array", "history-twice"])
def test_the_history_array_must_match_its_columns(run, tmp_path, change):
    arrays, header = npz_parts(run / "checkpoint.npz", history_in_header=False)
    change(header, arrays)
    path = write_npz(tmp_path / "checkpoint.npz", arrays, header)
    with pytest.raises(GpunetError, match="checkpoint.npz: damaged checkpoint file: "):
        load_checkpoint(path)


PLAUSIBLE = [None, 0, 1, 2, 3, 4, 0.0, 0.5, 1.0, 100, 500, 5000, "mnist", "fashion-mnist", "gd", "adam", [16], {}, []]


def test_fuzzed_checkpoints_are_refused_at_load_or_resume_to_the_end(run, tmp_path, monkeypatch, mnist):
    """A seeded fuzz of a checkpoint's header fields (both formats), with odd values and with plausible ones (the
    lies that look like a checkpoint): each is either refused by load_checkpoint with one line, or a resume from
    it trains to the end and saves, and its history plots, with no traceback: no lie gets past the load to fail later.
    The first is the checkpoint unchanged, so the resume path is surely taken."""
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: mnist)
    rng = np.random.default_rng(21)
    resumed = refused = 0
    for i in range(60):
        arrays, header = npz_parts(run / "checkpoint.npz", history_in_header=bool(i % 2))
        copy = tmp_path / f"run{i}"
        copy.mkdir()
        if i:
            header = fuzz_header(header, rng, *((PLAUSIBLE, 1) if i % 3 else (ODD_VALUES, 3)))
        path = write_npz(copy / "checkpoint.npz", arrays, header)
        try:
            load_checkpoint(path)
        except GpunetError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            refused += 1
            continue
        result = cli("train", "--resume", copy, "--epochs", 3, "--no-plots")
        assert "Traceback" not in result.output and result.exception is None or isinstance(
            result.exception, SystemExit), result.output
        if result.exit_code == 2:  # a refusal before training, e.g. rows that are not this data's
            assert_clean_error(result)
            assert not (copy / "metrics.json").exists()
        else:
            assert result.exit_code == 0, result.output
            metrics = json.loads((copy / "metrics.json").read_text())
            assert metrics["status"] == "completed"
            curves(metrics["history"], copy / "curves.png", metrics["best_epoch"])  # the plot drawn from them
            resumed += 1
    assert refused >= 30 and resumed >= 1
