"""The equations: gradients against central differences (float64, on every backend), shapes and seeded init,
softmax and loss at the extremes, state dicts, and the same forward, backward and steps on cpu and cuda."""

import numpy as np
import pytest

from gpunet.core.backend import get_backend
from gpunet.core.model import MLP, one_hot, softmax
from gpunet.core.optim import make_optimizer
from helpers import CPU64, batch


def numeric_grad(net, X, Y, name, indices, eps=1e-6):
    """Central differences of the loss w.r.t. the given entries of parameter `name` (float64, CPU)."""
    P = net.params[name]
    G = np.zeros_like(P)
    for i in indices:
        old = P[i]
        P[i] = old + eps
        up = net.loss(net.forward(X)[f"A{net.L}"], Y)
        P[i] = old - eps
        down = net.loss(net.forward(X)[f"A{net.L}"], Y)
        P[i] = old
        G[i] = (up - down) / (2 * eps)
    return G


@pytest.mark.parametrize("sizes", [(784, 128, 10), (784, 16, 12, 10)])
def test_backward_matches_central_differences(backend64, rng, sizes):
    """Backward on `backend64` (cuda too, when there is a GPU) against central differences on the CPU."""
    net, reference = MLP(backend64, sizes, seed=3), MLP(CPU64, sizes, seed=3)
    X, Y = batch(rng, m=8)
    X[:, ::7] = 0  # some dead inputs, as MNIST's borders
    grads = net.backward(net.forward(backend64.asarray(X)), backend64.asarray(Y))
    assert set(grads) == {f"d{k}" for k in net.params}
    for name, P in reference.params.items():
        indices = list(np.ndindex(P.shape))
        if name == "W1":  # 784 x h entries: check every column of 12 random rows
            rows = set(rng.choice(P.shape[0], 12, replace=False).tolist())
            indices = [i for i in indices if i[0] in rows]
        sel = tuple(np.array(indices).T)
        numeric = numeric_grad(reference, X, Y, name, indices)[sel]
        analytic = backend64.to_numpy(grads[f"d{name}"])[sel]
        rel = np.abs(analytic - numeric).max() / np.abs(numeric).max()
        assert rel < 1e-6, f"{name}: relative error {rel:.2e}"


def test_default_shapes_and_init_are_seeded():
    net = MLP(CPU64, seed=0)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (784, 128), "b1": (128,), "W2": (128, 10), "b2": (10,)}
    again = MLP(CPU64, seed=0).params["W1"]
    assert np.array_equal(net.params["W1"], again)
    assert not np.array_equal(net.params["W1"], MLP(CPU64, seed=1).params["W1"])
    # He initialisation: std sqrt(2 / fan_in).
    assert abs(net.params["W1"].std() - np.sqrt(2 / 784)) < 0.002


def test_forward_shapes(backend, rng):
    net = MLP(backend, (784, 32, 10))
    X, _ = batch(rng, m=5)
    cache = net.forward(backend.asarray(X))
    assert [cache[k].shape for k in ("Z1", "A1", "Z2", "A2")] == [(5, 32), (5, 32), (5, 10), (5, 10)]
    assert np.allclose(backend.to_numpy(cache["A2"]).sum(axis=1), 1, atol=1e-6)
    assert backend.to_numpy(net.predict(backend.asarray(X))).shape == (5,)


def test_softmax_and_loss_stay_finite_at_extreme_logits(backend):
    xp = backend.xp
    Z = backend.asarray(np.array([[1000.0, -1000.0, 0.0] + [0.0] * 7, [-1000.0] * 9 + [1000.0]]))
    A = backend.to_numpy(softmax(xp, Z))
    assert np.isfinite(A).all()
    assert A[0, 0] == pytest.approx(1.0) and A[1, 9] == pytest.approx(1.0)
    assert A[0, 1] == 0.0  # underflows to exactly zero
    net = MLP(backend, (784, 4, 10))
    Y_right = backend.asarray(np.eye(10)[[0, 9]])
    Y_wrong = backend.asarray(np.eye(10)[[1, 0]])  # the true class has probability exactly 0
    assert float(backend.to_numpy(net.loss(backend.asarray(A), Y_right))) == pytest.approx(0.0, abs=1e-6)
    wrong = float(backend.to_numpy(net.loss(backend.asarray(A), Y_wrong)))
    assert np.isfinite(wrong) and wrong > 80  # -log(tiny) of float32 is 87.3


def test_loss_matches_a_float64_reference(backend, rng):
    logits = rng.normal(size=(6, 10)) * 3
    y = rng.integers(0, 10, 6)
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    expected = -np.log(P[np.arange(6), y]).mean()
    net = MLP(backend, (784, 4, 10))
    A = softmax(backend.xp, backend.asarray(logits))
    got = float(backend.to_numpy(net.loss(A, backend.asarray(np.eye(10)[y]))))
    assert got == pytest.approx(expected, rel=1e-5)


def test_one_hot(backend):
    Y = backend.to_numpy(one_hot(backend.xp, backend.asarray(np.array([3, 0]), dtype=np.int32), 10, backend.dtype))
    assert Y.shape == (2, 10) and Y[0, 3] == 1 and Y[1, 0] == 1 and Y.sum() == 2


def test_state_dict_round_trip(backend):
    net = MLP(backend, (784, 8, 6, 10), seed=5)
    state = net.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    back = MLP.from_state_dict(get_backend("cpu"), state)
    assert back.sizes == (784, 8, 6, 10)
    for k, v in state.items():
        assert np.array_equal(back.params[k], v)


def test_from_state_dict_refuses_broken_chains():
    state = MLP(CPU64, (784, 8, 10)).state_dict()
    with pytest.raises(ValueError):
        MLP.from_state_dict(CPU64, {**state, "W2": np.zeros((7, 10))})
    with pytest.raises(ValueError):
        MLP.from_state_dict(CPU64, {k: v for k, v in state.items() if k != "b2"})


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_gpu_matches_cpu(optimizer, rng, gpu):
    """The same weights and batch on cpu and cuda: same forward, backward, and weights after 10 steps."""
    cpu = get_backend("cpu")
    X, Y = batch(rng, m=256)
    nets = {b.name: MLP(b, (784, 128, 10), seed=7) for b in (cpu, gpu)}
    outs = {}
    for b in (cpu, gpu):
        net = nets[b.name]
        Xb, Yb = b.asarray(X), b.asarray(Y)
        cache = net.forward(Xb)
        grads = net.backward(cache, Yb)
        opt = make_optimizer(optimizer, b, net.params)
        for _ in range(10):
            opt.step(net.params, net.backward(net.forward(Xb), Yb), 0.01 if optimizer == "adam" else 0.1)
        outs[b.name] = (b.to_numpy(cache["A2"]), {k: b.to_numpy(v) for k, v in grads.items()}, net.state_dict())
    (A_cpu, g_cpu, w_cpu), (A_gpu, g_gpu, w_gpu) = outs["cpu"], outs["cuda"]
    np.testing.assert_allclose(A_gpu, A_cpu, rtol=1e-4, atol=1e-6)
    for k in g_cpu:
        np.testing.assert_allclose(g_gpu[k], g_cpu[k], rtol=1e-3, atol=1e-6)
    for k in w_cpu:
        np.testing.assert_allclose(w_gpu[k], w_cpu[k], rtol=1e-3, atol=1e-5)
