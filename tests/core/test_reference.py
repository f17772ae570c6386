"""`MLP` (workspace, BLAS alpha/beta products) against the textbook `gpunet.core.reference`, float64."""

import numpy as np
import pytest

from gpunet.core import reference
from gpunet.core.backend import get_backend
from gpunet.core.model import MLP, one_hot
from gpunet.core.optim import make_optimizer
from gpunet.core.step import TrainStep

CPU64 = get_backend("cpu", "float64")
TOL = dict(rtol=1e-12, atol=1e-14)


def problem(rng, sizes, m=32):
    X = rng.random((m, sizes[0]))
    X[:, ::6] = 0  # dead pixels
    y = rng.integers(0, sizes[-1], m)
    return X, one_hot(np, y, sizes[-1], np.float64), y


@pytest.mark.parametrize("sizes", [(784, 16, 10), (784, 16, 12, 10)])
def test_forward_backward_and_loss_match_the_reference(rng, sizes):
    net = MLP(CPU64, sizes, seed=1)
    X, Y, _ = problem(rng, sizes)
    Z, A = reference.forward(np, net.W, net.b, X)
    ws = net.forward(X)
    for l in range(1, net.L + 1):
        np.testing.assert_allclose(ws.Z[l], Z[l], **TOL)
        np.testing.assert_allclose(ws.A[l], A[l], **TOL)
    assert float(net.loss(ws.A[net.L], Y)) == pytest.approx(float(reference.loss(np, A[-1], Y)), rel=1e-12)
    grads = net.backward(ws, Y)
    dW, db = reference.backward(net.W, Z, A, Y)
    for l in range(1, net.L + 1):
        np.testing.assert_allclose(grads[f"dW{l}"], dW[l], **TOL)
        np.testing.assert_allclose(grads[f"db{l}"], db[l], **TOL)


@pytest.mark.parametrize("sizes", [(784, 16, 10), (784, 16, 12, 10)])
@pytest.mark.parametrize("name, mu", [("gd", 0.0), ("momentum", 0.9)])
def test_training_steps_match_the_reference(rng, sizes, name, mu):
    """Three steps of the training step (momentum added into v by the gradient GEMM) and of the reference."""
    X, Y, y = problem(rng, sizes)
    net = MLP(CPU64, sizes, seed=2)
    W, b = [None] + [w.copy() for w in net.W[1:]], [None] + [c.copy() for c in net.b[1:]]
    vW, vb = [None] + [np.zeros_like(w) for w in W[1:]], [None] + [np.zeros_like(c) for c in b[1:]]
    step = TrainStep(net, make_optimizer(name, CPU64, net.params, mu), X, Y, y)
    for idx in (np.arange(0, 16), np.arange(16, 32), None):
        step(idx, 0.1)
        Xb, Yb = (X, Y) if idx is None else (X[idx], Y[idx])
        Z, A = reference.forward(np, W, b, Xb)
        dW, db = reference.backward(W, Z, A, Yb)
        reference.momentum_step(W, vW, dW, 0.1, mu)
        reference.momentum_step(b, vb, db, 0.1, mu)
        for l in range(1, net.L + 1):
            np.testing.assert_allclose(net.W[l], W[l], **TOL)
            np.testing.assert_allclose(net.b[l], b[l], **TOL)
