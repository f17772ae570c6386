"""The optimizers (gd, momentum, adam) against the loss and the textbook Adam formula, and the learning-rate
schedule."""

import numpy as np
import pytest

from gpunet.core.model import MLP
from gpunet.core.optim import learning_rate, make_optimizer
from helpers import CPU64, batch


@pytest.mark.parametrize("name, lr", [("gd", 0.1), ("momentum", 0.1), ("adam", 0.001)])
def test_optimizers_lower_the_loss(name, lr, rng):
    net = MLP(CPU64, (784, 16, 10), seed=0)
    X, Y = batch(rng, m=64)
    opt = make_optimizer(name, CPU64, net.params)
    first = net.loss(net.forward(X)["A2"], Y)
    for _ in range(30):
        opt.step(net.params, net.backward(net.forward(X), Y), lr)
    assert net.loss(net.forward(X)["A2"], Y) < 0.8 * first


def test_adam_step_matches_the_textbook_formula(rng):
    net = MLP(CPU64, (784, 4, 10), seed=0)
    X, Y = batch(rng, m=8)
    opt = make_optimizer("adam", CPU64, net.params)
    W = net.params["W2"].copy()
    m = v = np.zeros_like(W)
    for t in range(1, 4):
        grads = net.backward(net.forward(X), Y)
        g = grads["dW2"]
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        W = W - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        opt.step(net.params, grads, 0.01)
    np.testing.assert_allclose(net.params["W2"], W, rtol=1e-10, atol=1e-12)


def test_cosine_schedule():
    assert learning_rate(0.1, "cosine", 0, 100) == pytest.approx(0.1)
    assert learning_rate(0.1, "cosine", 50, 100) == pytest.approx(0.05)
    assert learning_rate(0.1, "cosine", 99, 100) < 0.0001
    assert learning_rate(0.1, "constant", 99, 100) == 0.1


def test_momentum_inside_the_gemm_equals_the_plain_update(rng):
    """Where GEMM accumulates in place (cuBLAS), momentum's products write v := mu v + dW straight into the
    velocity; that path gives the steps of the plain update. Here on a CPU backend told it may do the same."""
    from gpunet.core.backend import CpuBackend
    from gpunet.core.model import one_hot
    from gpunet.core.step import TrainStep

    class Accumulating(CpuBackend):
        gemm_accumulates = True  # the base gemm's beta: out := A @ B + beta out

    chunked = Accumulating("float64")
    chunked.chunk_rows = 5  # beta = mu on a batch's first chunk, then 1
    X = rng.random((64, 784))
    y = rng.integers(0, 10, 64).astype(np.int32)
    nets = []
    for backend in (CPU64, Accumulating("float64"), chunked):
        net = MLP(backend, (784, 16, 10), seed=5)
        opt = make_optimizer("momentum", backend, net.params)
        assert opt.targets([], [])[2] == (0.9 if backend.gemm_accumulates else 0.0)
        step = TrainStep(net, opt, X, one_hot(np, y, 10, np.float64), y)
        for s in range(8):
            step(np.arange(s % 4 * 16, s % 4 * 16 + 16), 0.1)
        nets.append(net.state_dict())
    for k in nets[0]:
        for other in nets[1:]:
            np.testing.assert_allclose(other[k], nets[0][k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_scikit_learns_velocity_form(rng, nesterov):
    """v := mu v - lr g; W := W + v, or W + mu v - lr g with Nesterov's momentum (the new v), at changing rates."""
    from gpunet.core.optim import SGD

    net = MLP(CPU64, (784, 4, 10), seed=0)
    X, Y = batch(rng, m=8)
    opt = SGD(CPU64, net.params, momentum=0.8, nesterov=nesterov)
    W, v = net.params["W1"].copy(), 0.0
    for lr in (0.1, 0.05, 0.02):
        grads = net.backward(net.forward(X), Y)
        g = grads["dW1"].copy()
        v = 0.8 * v - lr * g
        W = W + (0.8 * v - lr * g if nesterov else v)
        opt.step(net.params, grads, lr)
    np.testing.assert_allclose(net.params["W1"], W, rtol=1e-12, atol=1e-15)


def test_adam_with_scikit_learns_eps(rng):
    """correct_eps=False: W := W - lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)."""
    from gpunet.core.optim import Adam

    net = MLP(CPU64, (784, 4, 10), seed=0)
    X, Y = batch(rng, m=8)
    opt = Adam(CPU64, net.params, eps=1e-3, correct_eps=False)  # a large eps, so the two forms differ
    W = net.params["b2"].copy()
    m = v = np.zeros_like(W)
    for t in range(1, 4):
        grads = net.backward(net.forward(X), Y)
        g = grads["db2"].copy()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        W = W - 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-3)
        opt.step(net.params, grads, 0.01)
    np.testing.assert_allclose(net.params["b2"], W, rtol=1e-12, atol=1e-15)


def test_state_is_keyed_by_slot_and_parameter_and_round_trips():
    net = MLP(CPU64, (784, 4, 10), seed=0)
    opt = make_optimizer("adam", CPU64, net.params)
    assert set(opt.state) == {"m", "v"} and set(opt.state["m"]) == {"W1", "b1", "W2", "b2"}
    opt.state["v"]["W2"][...] = 3.0
    opt.t = 7
    saved = opt.state_dict()  # a checkpoint's names: "m.W1", ..., "t"
    assert "v.W2" in saved and int(saved["t"]) == 7
    again = make_optimizer("adam", CPU64, net.params)
    again.load_state_dict(saved)
    assert again.t == 7 and (again.state["v"]["W2"] == 3.0).all()
    with pytest.raises(ValueError, match="expected"):
        make_optimizer("momentum", CPU64, net.params).load_state_dict(saved)
