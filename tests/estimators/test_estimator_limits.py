"""gpunet.MLPClassifier against hostile parameters and inputs: a net over the size limit is refused before
anything is allocated, booleans are not integers, and inputs beyond the range of the float type the net computes
in are a clear error, never NaN probabilities."""

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("sklearn")

from gpunet import MLPClassifier  # noqa: E402
from gpunet.runs.store import MAX_PARAMETERS  # noqa: E402

rng = np.random.default_rng(0)
X = rng.random((40, 6))
y = np.arange(40) % 3


@pytest.mark.parametrize("hidden", [(30_000_000,), 30_000_000, (10_000, 10_000), (1, 8_000_000_000)])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_net_over_the_size_limit_is_refused_before_it_is_allocated(hidden, method):
    clf = MLPClassifier(hidden_layer_sizes=hidden, device="cpu", max_iter=1)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"over the limit of {MAX_PARAMETERS:,}"):
            clf.fit(X, y) if method == "fit" else clf.partial_fit(X, y, classes=[0, 1, 2])
        assert tracemalloc.get_traced_memory()[1] < 50_000_000  # bytes: no weights were made
    finally:
        tracemalloc.stop()


def test_a_net_at_the_limit_is_not_refused_for_its_size():
    width = (MAX_PARAMETERS - 3) // (6 + 1 + 3)  # 6 features, 3 classes: exactly within the limit
    clf = MLPClassifier(hidden_layer_sizes=(width,), device="cpu")
    assert clf._check_params() == (width,)
    sizes = (6, width, 3)
    assert sum(a * b + b for a, b in zip(sizes, sizes[1:])) <= MAX_PARAMETERS


@pytest.mark.parametrize("params", [
    {"hidden_layer_sizes": True}, {"hidden_layer_sizes": (True,)}, {"hidden_layer_sizes": (8, False)},
    {"hidden_layer_sizes": (np.bool_(True),)}, {"batch_size": True}, {"max_iter": True},
    {"n_iter_no_change": True},
], ids=["hidden", "hidden-tuple", "hidden-false", "hidden-numpy-bool", "batch", "max-iter", "n-iter"])
def test_booleans_are_not_integers(params):
    with pytest.raises(ValueError):
        MLPClassifier(**{"device": "cpu", "max_iter": 2, **params}).fit(X, y)


def test_numpy_integers_are_integers():
    clf = MLPClassifier(hidden_layer_sizes=(np.int64(4),), batch_size=np.int32(8), max_iter=np.int16(2),
                        device="cpu")
    with pytest.warns(Warning):
        clf.fit(X, y)
    assert clf.predict(X).shape == (40,)


@pytest.fixture(scope="module")
def fitted():
    clf = MLPClassifier(hidden_layer_sizes=(8,), device="cpu", max_iter=5, random_state=0, dtype="float32")
    with pytest.warns(Warning):
        return clf.fit(X, y)


@pytest.mark.parametrize("value", [1e39, -1e39, 1e300, np.finfo(np.float64).max])
@pytest.mark.parametrize("method", ["predict_proba", "predict"])
def test_inputs_beyond_float32_are_an_error_not_nan(fitted, value, method):
    bad = X.copy()
    bad[3, 2] = value
    with pytest.raises(ValueError, match="beyond the range of float32"):
        getattr(fitted, method)(bad)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("value", [3e38, -3e38, float(np.finfo(np.float32).max)])
def test_finite_float32_inputs_whose_products_overflow_are_an_error_not_nan(fitted, value):
    """Whether the products overflow depends on the weights' signs: either a clear error or finite answers."""
    bad = np.full_like(X, value, dtype=np.float32)
    try:
        P = fitted.predict_proba(bad)
    except ValueError as e:
        assert "not finite" in str(e)
    else:
        assert np.isfinite(P).all()


def test_training_on_inputs_beyond_float32_is_an_error():
    bad = X.copy()
    bad[0, 0] = 1e40
    for fit in (lambda c: c.fit(bad, y), lambda c: c.partial_fit(bad, y, classes=[0, 1, 2])):
        with pytest.raises(ValueError, match="beyond the range of float32"):
            fit(MLPClassifier(hidden_layer_sizes=(4,), device="cpu", max_iter=1, dtype="float32"))


def test_float64_nets_take_what_float64_holds(fitted):
    clf = MLPClassifier(hidden_layer_sizes=(8,), device="cpu", max_iter=5, random_state=0, dtype="float64")
    with pytest.warns(Warning):
        clf.fit(X, y)
    big = X.copy()
    big[3, 2] = 1e39
    assert np.isfinite(clf.predict_proba(big)).all()
