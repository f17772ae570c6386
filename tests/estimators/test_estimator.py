"""gpunet.MLPClassifier: scikit-learn's estimator checks, the same training as `gpunet train`, pipelines and
searches, pickling, partial_fit, the stopping rules, and CuPy arrays that stay on the GPU."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from gpunet import MLPClassifier  # noqa: E402
from gpunet.core.backend import get_backend  # noqa: E402
from gpunet.runs.config import load_config  # noqa: E402
from gpunet.core.model import MLP  # noqa: E402
from gpunet.data.load import to_features  # noqa: E402
from gpunet.runs.store import load_model  # noqa: E402
from gpunet.runs.train import train  # noqa: E402

EXPECTED_FAILED_CHECKS: dict[str, str] = {}  # every check passes; README lists this as "none"


@parametrize_with_checks([MLPClassifier(max_iter=30, device="cpu")],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_fit_is_gpunet_train(tmp_path, mnist):
    """Same seed, recipe and data: the estimator's weights and losses are those `gpunet train` produces."""
    train_split, test_split = mnist
    cfg = load_config(overrides={"limit": 2000, "epochs": 2, "batch_size": 64, "lr": 0.1, "val_size": 0})
    cfg = type(cfg)(**{**cfg.as_dict(), "schedule": "constant"})
    metrics = train(cfg, get_backend("cpu"), train_split, test_split, tmp_path, threads=1)  # the same sums
    net, _ = load_model(tmp_path / "model.npz", get_backend("cpu"))
    clf = MLPClassifier(hidden_layer_sizes=128, optimizer="momentum", learning_rate_init=0.1, momentum=0.9,
                        batch_size=64, max_iter=2, random_state=cfg.seed, device="cpu", tol=0.0,
                        n_iter_no_change=99, n_threads=1)
    with pytest.warns(ConvergenceWarning):
        clf.fit(to_features(train_split.images[:2000]), train_split.labels[:2000])
    state = net.state_dict()
    for l in (1, 2):
        np.testing.assert_array_equal(clf.coefs_[l - 1], state[f"W{l}"])
        np.testing.assert_array_equal(clf.intercepts_[l - 1], state[f"b{l}"])
    np.testing.assert_allclose(clf.loss_curve_, [r["train_loss"] for r in metrics["history"]], rtol=1e-12)
    X_test = to_features(test_split.images)
    assert clf.score(X_test, test_split.labels) == pytest.approx(metrics["test_accuracy"])
    assert clf.n_iter_ == 2 and clf.t_ == 4000 and clf.device_ == "cpu"


def test_any_labels_features_and_classes():
    X, y = make_classification(n_samples=600, n_features=7, n_informative=5, n_classes=5,
                               n_clusters_per_class=1, random_state=0)
    names = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, names)
    assert list(clf.classes_) == ["ant", "bee", "cat", "dog", "eel"] and clf.n_features_in_ == 7
    assert [W.shape for W in clf.coefs_] == [(7, 32), (32, 16), (16, 5)] and clf.n_layers_ == 4
    P = clf.predict_proba(X)
    assert P.shape == (600, 5) and isinstance(P, np.ndarray)
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])
    assert clf.score(X, names) > 0.85


def test_pipeline_grid_search_and_clone(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0, device="cpu"))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(16,), (64,)],
                                 "mlpclassifier__learning_rate_init": [0.01, 0.05]}, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_train, y_train)
    assert len(search.cv_results_["params"]) == 4
    assert search.score(X_test, y_test) > 0.9
    copy = clone(search.best_estimator_[-1])
    assert copy.get_params() == search.best_estimator_[-1].get_params() and not hasattr(copy, "coefs_")


def test_pickle_stores_host_arrays_and_resumes(digits):
    X_train, X_test, y_train, _ = digits
    X_train, X_test = X_train / 16, X_test / 16
    clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, device="cpu")
    for _ in range(2):
        clf.partial_fit(X_train, y_train, classes=np.arange(10))
    blob = pickle.dumps(clf)
    copy = pickle.loads(blob)
    assert "_net" not in copy.__dict__ and "_opt" not in copy.__dict__
    assert all(isinstance(v, np.ndarray) for v in [*copy.coefs_, *copy.intercepts_, *copy._opt_state.values()])
    np.testing.assert_array_equal(copy.predict_proba(X_test), clf.predict_proba(X_test))
    assert "_net" in clf.__dict__  # pickling did not strip the original
    clf.partial_fit(X_train, y_train)  # the optimizer state travels too: both continue alike
    copy.partial_fit(X_train, y_train)
    np.testing.assert_array_equal(copy.coefs_[0], clf.coefs_[0])
    assert copy.n_iter_ == clf.n_iter_ == 3 and copy.loss_curve_ == clf.loss_curve_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=2 on purpose
def test_the_fitted_net_is_reused_on_its_own_device(digits, monkeypatch):
    """predict and partial_fit on the device the net lives on use it as it is, with no copy through the host."""
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0, device="cpu").fit(X_train / 16, y_train)
    net = clf._net

    def no_copy(*args, **kwargs):
        raise AssertionError("the net was rebuilt from its host copy")

    monkeypatch.setattr(MLP, "from_state_dict", no_copy)
    clf.predict(X_test / 16)
    clf.partial_fit(X_train / 16, y_train)
    assert clf._net is net


def test_partial_fit_rules(digits):
    X_train, _, y_train, _ = digits
    clf = MLPClassifier(device="cpu", random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X_train, y_train)
    clf.partial_fit(X_train[y_train < 5] / 16, y_train[y_train < 5], classes=np.arange(10))
    assert clf.predict_proba(X_train).shape == (len(X_train), 10)
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X_train, y_train + 10)
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X_train, y_train, classes=np.arange(5))
    for _ in range(3):
        clf.partial_fit(X_train / 16, y_train)
    assert clf.n_iter_ == 4 and clf.loss_curve_[-1] < clf.loss_curve_[1]


def test_stopping_rules(digits):
    X_train, _, y_train, _ = digits
    X_train = X_train / 16
    stalled = MLPClassifier(tol=10.0, n_iter_no_change=2, max_iter=50, random_state=0, device="cpu")
    stalled.fit(X_train, y_train)  # no epoch lowers the loss by 10: stop after 1 + 2 + 1 epochs
    assert stalled.n_iter_ == 4 and len(stalled.loss_curve_) == 4
    assert stalled.best_loss_ == min(stalled.loss_curve_) and stalled.validation_scores_ is None
    early = MLPClassifier(early_stopping=True, tol=1.0, n_iter_no_change=3, max_iter=50, random_state=0,
                          device="cpu").fit(X_train, y_train)
    assert early.n_iter_ == 5 and len(early.validation_scores_) == 5 and early.best_loss_ is None
    assert early.best_validation_score_ == max(early.validation_scores_) > 0.8
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2, device="cpu").fit(X_train, y_train)


def test_same_random_state_same_model_and_cosine_schedule(digits):
    X_train, X_test, y_train, _ = digits
    kw = dict(max_iter=5, learning_rate="cosine", random_state=3, device="cpu", dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = MLPClassifier(**kw).fit(X_train / 16, y_train), MLPClassifier(**kw).fit(X_train / 16, y_train)
        c = MLPClassifier(**{**kw, "learning_rate": "constant"}).fit(X_train / 16, y_train)
    assert a.coefs_[0].dtype == np.float64
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


@pytest.mark.parametrize("params, fragment", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch_size"), ({"learning_rate_init": 0}, "learning_rate_init"),
    ({"validation_fraction": 1.0}, "validation_fraction"), ({"learning_rate": "adaptive"}, "learning_rate"),
    ({"n_threads": 0}, "n_threads"), ({"n_threads": "all"}, "n_threads"),
])
def test_bad_parameters_fail_at_fit(params, fragment):
    clf = MLPClassifier(**params)  # scikit-learn estimators check their parameters in fit, not __init__
    with pytest.raises(ValueError, match=fragment):
        clf.fit(np.eye(4), [0, 1, 0, 1])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_n_threads_chooses_the_blas_threads_of_fit(digits, monkeypatch):
    """n_threads goes to gpunet.core.threads.blas_threads with the fit's batch and sizes; threads_ reports it."""
    from gpunet.sklearn import estimator

    X_train, _, y_train, _ = digits
    asked = []
    real = estimator.blas_threads
    monkeypatch.setattr(estimator, "blas_threads", lambda n, *args: asked.append((n, *args[1:])) or real(n, *args))
    one = MLPClassifier(max_iter=2, device="cpu", n_threads=1, random_state=0).fit(X_train, y_train)
    assert asked == [(1, 128, (64, 128, 10))]
    assert one.threads_["asked"] == 1 and one.threads_["policy"] == "asked" and one.threads_["steps_at"] == {"1": 22}
    auto = MLPClassifier(max_iter=2, device="cpu", random_state=0).fit(X_train, y_train)
    assert auto.threads_["policy"] in ("small products", "one thread available")  # 64-128-10 at batch 128 is small
    np.testing.assert_array_equal(one.coefs_[0], auto.coefs_[0])
    auto.partial_fit(X_train, y_train)
    assert asked[-1] == ("auto", 128, (64, 128, 10)) and sum(auto.threads_["steps_at"].values()) == 11


def test_diverging_training_says_what_to_do():
    X = np.random.default_rng(0).normal(size=(200, 5)) * 1e4
    with pytest.raises(ValueError, match="lower learning_rate_init"):
        MLPClassifier(learning_rate_init=10.0, max_iter=5, device="cpu").fit(X, np.arange(200) % 2)


def test_import_gpunet_does_not_import_sklearn():
    code = "import sys, gpunet; assert 'sklearn' not in sys.modules; gpunet.MLPClassifier; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_bench_against_sklearn_refuses_bad_batch_sizes(capsys):
    from gpunet.bench.sklearn import main

    with pytest.raises(SystemExit) as e:
        main(["--batch-sizes", "0,128"])
    assert e.value.code == 2 and "--batch-sizes '0,128'" in capsys.readouterr().err


def test_bench_against_sklearn_prints_the_table(capsys):
    from gpunet.bench.sklearn import main

    main(["--epochs-mnist", "1", "--epochs-digits", "2", "--repeats", "1", "--mnist-train", "2000",
          "--batch-sizes", "64,128"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: ") and "float32 data" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [(r[0], r[-6]) for r in rows if r[-5] == "sklearn"] == [("mnist", "64"), ("mnist", "128"),
                                                                   ("digits", "64"), ("digits", "128")]
    for row in rows:
        assert row[-4] in ("cpu", "cuda") and float(row[-3]) > 0 and row[-1].endswith("x")
        assert 50 < float(row[-2].rstrip("%")) <= 100  # one epoch already learns: test accuracy, not chance


@pytest.mark.gpu
def test_cupy_arrays_stay_on_the_gpu(gpu, digits):
    cupy = gpu.xp
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(max_iter=30, random_state=0, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(cupy.asarray(X_train / 16), cupy.asarray(y_train))  # CuPy input trains on the GPU
    assert clf.device_ == "cuda" and isinstance(clf.coefs_[0], np.ndarray)
    P, pred = clf.predict_proba(cupy.asarray(X_test / 16)), clf.predict(cupy.asarray(X_test / 16))
    assert isinstance(P, cupy.ndarray) and isinstance(pred, cupy.ndarray)
    np.testing.assert_allclose(P.get(), clf.predict_proba(X_test / 16), atol=1e-5)  # NumPy in: NumPy out
    assert isinstance(clf.predict(X_test / 16), np.ndarray) and (pred.get() == y_test).mean() > 0.9
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict(cupy.asarray(X_test / 16)).get(), pred.get())


@pytest.mark.gpu
def test_cuda_matches_cpu(gpu, digits):
    X_train, X_test, y_train, _ = digits
    kw = dict(max_iter=3, random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cpu = MLPClassifier(device="cpu", **kw).fit(X_train / 16, y_train)
        cuda = make_pipeline(StandardScaler(), MLPClassifier(device="cuda", **kw)).fit(X_train, y_train)
        cuda_plain = MLPClassifier(device="cuda", **kw).fit(X_train / 16, y_train)
    assert cuda[-1].device_ == "cuda" and cuda.score(X_test, digits[3]) > 0.8
    np.testing.assert_allclose(cuda_plain.predict_proba(X_test / 16), cpu.predict_proba(X_test / 16), atol=1e-9)
