"""Activations, outputs and initial weights: each derivative against central differences (float64, every
backend), the losses against plain formulas, and the two host initialisations."""

import numpy as np
import pytest

from gpunet.core.activations import ACTIVATIONS, OUTPUTS, softmax
from gpunet.core.init import glorot_uniform, he_normal
from gpunet.core.model import MLP
from helpers import CPU64


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_derivative_matches_central_differences(backend64, rng, name):
    f, xp = ACTIVATIONS[name], backend64.xp
    Z = rng.normal(size=(7, 5)) * 3
    Z[Z == 0] = 0.1
    A = f.forward(xp, backend64.asarray(Z), xp.empty((7, 5)))
    eps = 1e-6
    numeric = (f.forward(np, Z + eps, np.empty_like(Z)) - f.forward(np, Z - eps, np.empty_like(Z))) / (2 * eps)
    if f.derivative is None:
        analytic = np.ones_like(Z)
    else:
        out = xp.empty((7, 5), np.bool_ if f.mask else np.float64)
        analytic = backend64.to_numpy(f.derivative(xp, backend64.asarray(Z), A, out)).astype(np.float64)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def targets(rng, output, m, k):
    if output == "softmax":
        return np.eye(k)[rng.integers(0, k, m)]
    if output == "logistic":
        return (rng.random((m, k)) < 0.5).astype(np.float64)
    return rng.normal(size=(m, k))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("output, k", [("softmax", 4), ("logistic", 1), ("logistic", 3), ("identity", 2)])
def test_backward_matches_central_differences_for_each_pair(backend64, rng, activation, output, k):
    """dJ/dW and dJ/db of every layer, for each hidden activation and each output with its loss."""
    sizes = (6, 5, 4, k)
    state = glorot_uniform(sizes, np.random.RandomState(0))
    net = MLP.from_state_dict(backend64, state, activation, output)
    reference = MLP.from_state_dict(CPU64, state, activation, output)
    X, Y = rng.normal(size=(9, 6)), targets(rng, output, 9, k)
    grads = net.backward(net.forward(backend64.asarray(X)), backend64.asarray(Y))
    eps = 1e-6
    for name, P in reference.params.items():
        numeric = np.zeros_like(P)
        for i in np.ndindex(P.shape):
            old = P[i]
            P[i] = old + eps
            up = float(reference.loss(reference.forward(X).A[3], Y))
            P[i] = old - eps
            down = float(reference.loss(reference.forward(X).A[3], Y))
            P[i] = old
            numeric[i] = (up - down) / (2 * eps)
        analytic = backend64.to_numpy(grads[f"d{name}"])
        if output == "identity" and k > 1:
            numeric *= k  # scikit-learn's squared loss is a mean over the k outputs; its gradient is not
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9, err_msg=name)


def test_losses_match_plain_formulas(backend, rng):
    floor = np.finfo(np.float64).eps
    Z = rng.normal(size=(8, 3)) * 2
    for name, expected in (
        ("softmax", lambda A, Y: -(Y * np.log(A)).sum() / 8),
        ("logistic", lambda A, Y: -(Y * np.log(A) + (1 - Y) * np.log(1 - A)).sum() / 8),
        ("identity", lambda A, Y: ((A - Y) ** 2).mean() / 2),
    ):
        Y = targets(rng, name, 8, 3)
        net = MLP.from_state_dict(backend, glorot_uniform((2, 3), np.random.RandomState(0)), output=name)
        net.floor = floor
        ws = net.workspace(8)
        A = OUTPUTS[name].forward(backend.xp, backend.asarray(Z), ws.A[1], ws)
        got = float(backend.to_numpy(net.loss(A, backend.asarray(Y), ws)))
        assert got == pytest.approx(expected(backend.to_numpy(A).astype(np.float64), Y), rel=1e-5), name


def test_softmax_row_sums_by_product_or_reduction_agree(backend, rng):
    Z = backend.asarray(rng.normal(size=(5, 10)) * 4)
    xp = backend.xp
    np.testing.assert_allclose(backend.to_numpy(softmax(xp, Z, ones=xp.ones(10, backend.dtype))),
                               backend.to_numpy(softmax(xp, Z)), rtol=1e-6)


def test_he_normal_and_glorot_uniform():
    he = he_normal((784, 128, 10), np.random.default_rng(0))
    assert abs(he["W1"].std() - np.sqrt(2 / 784)) < 0.002 and not he["b1"].any()
    rs = np.random.RandomState(3)
    gl = glorot_uniform((20, 30, 2), rs, factor=2.0)
    again = np.random.RandomState(3)  # the order of draws: W1, b1, W2, b2
    bound = np.sqrt(2.0 / 50)
    np.testing.assert_array_equal(gl["W1"], again.uniform(-bound, bound, (20, 30)))
    np.testing.assert_array_equal(gl["b1"], again.uniform(-bound, bound, 30))
    assert np.abs(gl["W2"]).max() <= np.sqrt(2.0 / 32)
