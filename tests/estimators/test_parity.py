"""gpunet's MLPClassifier and MLPRegressor fit what scikit-learn's fit: same random_state, float64, on the CPU,
then the same loss_curve_ (1e-6 relative), n_iter_, t_, validation_scores_, weights and predictions (1e-5)."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier, MLPRegressor as SkRegressor  # noqa: E402

from gpunet import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    X, y = X[:800] / 16, y[:800]
    Xm, Ym = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4, random_state=0)
    Xr, yr = make_regression(n_samples=300, n_features=8, noise=0.1, random_state=0)
    return {"digits": (X, y), "binary": (X, y % 2), "multilabel": (Xm / 10, Ym), "regression": (Xr, yr / 100),
            "two targets": (Xr, np.c_[yr, -yr / 2] / 100)}


CASES = {
    "adam": ("digits", dict(hidden_layer_sizes=(32,), max_iter=12)),
    "sgd nesterov alpha": ("digits", dict(hidden_layer_sizes=(32, 16), solver="sgd", alpha=1e-2,
                                          learning_rate_init=0.05, max_iter=12)),
    "tanh invscaling no shuffle": ("digits", dict(activation="tanh", solver="sgd", learning_rate="invscaling",
                                                  learning_rate_init=0.5, shuffle=False, nesterovs_momentum=False,
                                                  max_iter=12)),
    "logistic early stopping": ("digits", dict(activation="logistic", early_stopping=True, learning_rate_init=0.01,
                                               max_iter=40)),
    "adaptive": ("digits", dict(solver="sgd", learning_rate="adaptive", tol=0.5, n_iter_no_change=2, max_iter=30)),
    "binary": ("binary", dict(max_iter=12, batch_size=64)),
    "multilabel": ("multilabel", dict(max_iter=20)),
    "regression": ("regression", dict(max_iter=20, early_stopping=True)),
    "regression identity two targets": ("two targets", dict(max_iter=20, activation="identity", solver="sgd",
                                                            learning_rate_init=0.01)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_is_scikit_learns(data, case):
    name, params = CASES[case]
    X, y = data[name]
    regress = name in ("regression", "two targets")
    Sk, Ours = (SkRegressor, MLPRegressor) if regress else (SkClassifier, MLPClassifier)
    params = {**params, "random_state": 7}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on both sides: the epochs are capped on purpose
        theirs, ours = Sk(**params).fit(X, y), Ours(device="cpu", **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6, atol=0)
    if params.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-6)
        assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-6)
    else:
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-6)
    assert [W.shape for W in ours.coefs_] == [W.shape for W in theirs.coefs_]
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-8)
    assert ours.out_activation_ == theirs.out_activation_ and ours.n_outputs_ == theirs.n_outputs_
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=0, atol=1e-5)
    if not regress:
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)


def test_warm_start_and_partial_fit_are_scikit_learns(data):
    X, y = data["digits"]
    params = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, warm_start=True, solver="sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, ours = SkClassifier(**params), MLPClassifier(device="cpu", **params)
        for est in (theirs, ours):
            est.fit(X, y)
            est.fit(X, y)  # continues from the first fit's weights with a new optimizer
            est.partial_fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_fit_is_scikit_learns(data, fmt):
    """Sparse X (the first layer's products on the sparse matrix) fits as scikit-learn fits it, and as dense X."""
    import scipy.sparse

    X, y = data["digits"]
    Xs = scipy.sparse.csr_matrix(X) if fmt == "csr" else scipy.sparse.csc_matrix(X)
    params = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, solver="sgd", alpha=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, ours = SkClassifier(**params).fit(Xs, y), MLPClassifier(device="cpu", **params).fit(Xs, y)
        dense = MLPClassifier(device="cpu", **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(ours.loss_curve_, dense.loss_curve_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(Xs), theirs.predict_proba(Xs), atol=1e-5)
