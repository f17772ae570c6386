"""gpunet.MLPClassifier and MLPRegressor: scikit-learn's estimator checks, pipelines and searches, pickling,
partial_fit, the stopping rules, the outputs, the warnings, and CuPy arrays that stay on the GPU (the fit against
scikit-learn's: test_parity.py)."""

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

from gpunet import MLPClassifier, MLPRegressor  # noqa: E402
from gpunet.core.model import MLP  # noqa: E402

EXPECTED_FAILED_CHECKS: dict[str, str] = {}  # every check passes; README lists this as "none"


@parametrize_with_checks([MLPClassifier(max_iter=30, device="cpu"), MLPRegressor(max_iter=30, device="cpu")],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_any_labels_features_and_classes():
    X, y = make_classification(n_samples=600, n_features=7, n_informative=5, n_classes=5,
                               n_clusters_per_class=1, random_state=0)
    names = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), learning_rate_init=0.01, max_iter=60, random_state=0, device="cpu")
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
    assert copy.n_iter_ == clf.n_iter_ == 1 and copy.loss_curve_ == clf.loss_curve_ and len(clf.loss_curve_) == 3


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
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X_train, y_train + 10)
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X_train, y_train, classes=np.arange(5))
    for _ in range(3):
        clf.partial_fit(X_train / 16, y_train)
    # n_iter_ counts the epochs of the last call, as scikit-learn's
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 4 and clf.loss_curve_[-1] < clf.loss_curve_[1]


def test_stopping_rules(digits):
    X_train, _, y_train, _ = digits
    X_train = X_train / 16
    stalled = MLPClassifier(tol=10.0, n_iter_no_change=2, max_iter=50, random_state=0, device="cpu")
    stalled.fit(X_train, y_train)  # no epoch lowers the loss by 10: stop after 1 + 2 + 1 epochs
    assert stalled.n_iter_ == 4 and len(stalled.loss_curve_) == 4
    assert stalled.best_loss_ == min(stalled.loss_curve_) and stalled.validation_scores_ is None
    early = MLPClassifier(early_stopping=True, tol=1.0, n_iter_no_change=3, max_iter=50, random_state=0,
                          learning_rate_init=0.01, device="cpu").fit(X_train, y_train)
    assert early.n_iter_ == 5 and len(early.validation_scores_) == 5 and early.best_loss_ is None
    assert early.best_validation_score_ == max(early.validation_scores_) > 0.8
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2, device="cpu").fit(X_train, y_train)


def test_same_random_state_same_model_and_invscaling(digits):
    X_train, X_test, y_train, _ = digits
    kw = dict(max_iter=5, solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, random_state=3,
              device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = MLPClassifier(**kw).fit(X_train / 16, y_train), MLPClassifier(**kw).fit(X_train / 16, y_train)
        c = MLPClassifier(**{**kw, "learning_rate": "constant"}).fit(X_train / 16, y_train)
    assert a.coefs_[0].dtype == np.float64  # the input's dtype
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_dtype_follows_the_input_unless_given(digits):
    X_train, _, y_train, _ = digits
    X32 = (X_train / 16).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert MLPClassifier(max_iter=1, device="cpu").fit(X32, y_train).coefs_[0].dtype == np.float32
        assert MLPClassifier(max_iter=1, device="cpu", dtype="float64").fit(X32, y_train).coefs_[0].dtype == np.float64
    assert MLPClassifier().n_threads == "auto" and clone(MLPRegressor(n_threads=2)).n_threads == 2


def test_binary_multilabel_and_regression_outputs(digits):
    X_train, _, y_train, _ = digits
    X = X_train / 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        binary = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu").fit(X, y_train > 4)
        Y = np.c_[y_train % 2, y_train > 4, y_train == 0]
        multi = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu").fit(X, Y)
        reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, learning_rate_init=0.01, random_state=0,
                           device="cpu").fit(X, y_train / 9)
    assert binary.coefs_[-1].shape == (8, 1) and binary.out_activation_ == "logistic"
    P = binary.predict_proba(X)
    assert P.shape == (len(X), 2) and set(binary.predict(X)) <= {False, True}
    np.testing.assert_allclose(P.sum(axis=1), 1)
    np.testing.assert_allclose(binary.predict_log_proba(X), np.log(P))
    assert multi.coefs_[-1].shape == (8, 3) and multi.predict(X).shape == Y.shape
    assert set(np.unique(multi.predict(X))) <= {0, 1}
    assert reg.out_activation_ == "identity" and reg.predict(X).shape == (len(X),) and reg.score(X, y_train / 9) > 0


def test_a_fit_that_learns_nothing_warns():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)  # labels that the features do not predict
    with pytest.warns(RuntimeWarning, match="learned nothing"):
        MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, device="cpu").fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0, device="cpu", warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    clf.intercepts_[0][:] = -1e3  # a bias pushing every hidden unit below 0, taken up by the next warm start
    clf.__dict__.pop("_net")
    with pytest.warns(RuntimeWarning, match="dead ReLU"):
        clf.fit(X, y)


@pytest.mark.parametrize("params, fragment", [
    ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"), ({"solver": "rmsprop"}, "solver"),
    ({"solver": "lbfgs"}, "lbfgs"), ({"activation": "softplus"}, "activation"),
    ({"device": "tpu"}, "device"), ({"batch_size": 0}, "batch_size"), ({"learning_rate_init": 0}, "learning_rate_init"),
    ({"validation_fraction": 1.0}, "validation_fraction"), ({"learning_rate": "cosine"}, "learning_rate"),
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
    kw = dict(hidden_layer_sizes=128, batch_size=128, max_iter=2, device="cpu", random_state=0)
    one = MLPClassifier(n_threads=1, **kw).fit(X_train, y_train)
    assert asked == [(1, 128, (64, 128, 10))]
    assert one.threads_["asked"] == 1 and one.threads_["policy"] == "asked" and one.threads_["steps_at"] == {"1": 22}
    auto = MLPClassifier(**kw).fit(X_train, y_train)
    assert auto.threads_["policy"] in ("small products", "one thread available")  # 64-128-10 at batch 128 is small
    np.testing.assert_array_equal(one.coefs_[0], auto.coefs_[0])
    auto.partial_fit(X_train, y_train)
    assert asked[-1] == ("auto", 128, (64, 128, 10)) and sum(auto.threads_["steps_at"].values()) == 11


def test_diverging_training_says_what_to_do():
    X = (np.random.default_rng(0).normal(size=(200, 5)) * 1e4).astype(np.float32)  # computed in float32
    with pytest.raises(ValueError, match="lower learning_rate_init"):
        MLPClassifier(solver="sgd", learning_rate_init=10.0, max_iter=50, device="cpu").fit(X, np.arange(200) % 3)


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
          "--batch-sizes", "auto,128"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: ") and "scikit-learn defaults" in lines[1]
    rows = [line.split() for line in lines[3:]]
    assert [(r[0], r[-8], r[-6]) for r in rows if r[-5] == "sklearn"] == [
        ("mnist", "float32", "auto"), ("mnist", "float32", "128"), ("digits", "float32", "auto"),
        ("digits", "float32", "128"), ("mnist", "float64", "auto"), ("mnist", "float64", "128"),
        ("digits", "float64", "auto"), ("digits", "float64", "128")]
    for row in rows:
        assert row[-4] in ("cpu", "cuda") and float(row[-3]) > 0 and row[-1].endswith("x")
        assert 20 < float(row[-2].rstrip("%")) <= 100  # learning already: test accuracy above chance (10%)


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


def test_cuda_matches_cpu(gpu, digits):
    X_train, X_test, y_train, _ = digits
    kw = dict(max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cpu = MLPClassifier(device="cpu", **kw).fit(X_train / 16, y_train)
        cuda = make_pipeline(StandardScaler(), MLPClassifier(device="cuda", **kw)).fit(X_train, y_train)
        cuda_plain = MLPClassifier(device="cuda", **kw).fit(X_train / 16, y_train)
    assert cuda[-1].device_ == "cuda" and cuda.score(X_test, digits[3]) > 0.8
    np.testing.assert_allclose(cuda_plain.predict_proba(X_test / 16), cpu.predict_proba(X_test / 16), atol=1e-9)


def test_partial_fit_takes_cupy_classes_on_every_call(gpu, digits):
    cupy = gpu.xp
    X_train, _, y_train, _ = digits
    X, y, classes = cupy.asarray(X_train / 16), cupy.asarray(y_train), cupy.asarray(np.arange(10))
    clf = MLPClassifier(random_state=0)
    for _ in range(2):
        clf.partial_fit(X, y, classes=classes)
    assert clf.t_ == 2 * len(y_train) and clf.classes_.tolist() == list(range(10)) and clf.device_ == "cuda"
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=cupy.asarray(np.arange(11)))
