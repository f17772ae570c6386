"""The training step on reused arrays gives what the public forward/backward/step give, step for step."""

import numpy as np
import pytest

from gpunet.core.backend import CpuBackend
from gpunet.core.model import MLP, one_hot
from gpunet.core.optim import make_optimizer
from gpunet.core.step import Buffers, TrainStep
from helpers import CPU64


def dataset(rng, n=50, n_in=784):
    X = rng.random((n, n_in))
    X[:, ::5] = 0
    y = rng.integers(0, 10, n).astype(np.int32)
    return X, y


@pytest.mark.parametrize("chunk_rows", [None, 7])
@pytest.mark.parametrize("sizes", [(784, 16, 10), (784, 16, 12, 10)])
@pytest.mark.parametrize("name, lr", [("gd", 0.1), ("momentum", 0.1), ("adam", 0.01)])
def test_step_matches_the_public_api(rng, sizes, name, lr, chunk_rows):
    """With chunk_rows 7, every batch runs in row chunks (the last one short), its gradients summed."""
    X, y = dataset(rng)
    Y = one_hot(np, y, 10, np.float64)
    chunked = CpuBackend("float64")
    chunked.chunk_rows = chunk_rows
    a, b = MLP(chunked, sizes, seed=2), MLP(CPU64, sizes, seed=2)
    opt_a, opt_b = make_optimizer(name, chunked, a.params), make_optimizer(name, CPU64, b.params)
    step = TrainStep(a, opt_a, X, Y, y)
    perm = rng.permutation(len(y))
    batches = [perm[0:16], perm[16:32], perm[32:48], perm[48:], None]  # a short last batch, then the full batch
    loss_sum, correct = step.zero_sums()
    want_loss = want_correct = 0.0
    for t, idx in enumerate(batches, start=1):
        step(idx, lr)
        Xb, Yb, yb = (X, Y, y) if idx is None else (X[idx], Y[idx], y[idx])
        cache = b.forward(Xb)
        want_loss += float(b.loss(cache[f"A{b.L}"], Yb)) * len(yb)
        want_correct += int((cache[f"A{b.L}"].argmax(axis=1) == yb).sum())
        opt_b.step(b.params, b.backward(cache, Yb), lr)
        assert opt_a.t == opt_b.t == t
        for k in a.params:
            np.testing.assert_allclose(a.params[k], b.params[k], rtol=1e-12, atol=1e-14, err_msg=f"{k} at step {t}")
    assert float(loss_sum) == pytest.approx(want_loss, rel=1e-12)
    assert int(correct) == want_correct
    loss_sum, correct = step.zero_sums()
    assert float(loss_sum) == 0 and int(correct) == 0


def test_step_reuses_its_arrays(rng):
    X, y = dataset(rng)
    net = MLP(CPU64, (784, 8, 10))
    step = TrainStep(net, make_optimizer("momentum", CPU64, net.params), X, one_hot(np, y, 10, np.float64), y)
    step(np.arange(16), 0.1)
    before = {k: id(v) for k, v in step.buf.arrays.items()}
    step(np.arange(16, 32), 0.1)
    assert {k: id(v) for k, v in step.buf.arrays.items()} == before
    step(np.arange(32, 40), 0.1)  # a new batch shape gets arrays of its own
    assert len(step.buf.arrays) > len(before)


def test_buffers_are_kept_per_name_shape_and_dtype():
    kept = Buffers(np)
    a = kept("Z1", (2, 3), np.float32)
    assert kept("Z1", (2, 3), np.float32) is a and a.shape == (2, 3) and a.dtype == np.float32
    assert kept("Z1", (2, 3), np.float64) is not a and kept("Z1", (3, 3), np.float32) is not a
    assert kept("Z2", (2, 3), np.float32) is not a


def test_public_forward_results_belong_to_the_caller(rng):
    net = MLP(CPU64, (784, 8, 10))
    X1, X2 = rng.random((3, 784)), rng.random((3, 784))
    first = net.forward(X1)["A2"].copy()
    cache = net.forward(X1)
    net.forward(X2)
    np.testing.assert_array_equal(cache["A2"], first)


def test_cuda_graph_switch_is_off_on_the_cpu(rng, monkeypatch):
    monkeypatch.setenv("GPUNET_CUDA_GRAPH", "1")
    X, y = dataset(rng)
    net = MLP(CPU64, (784, 8, 10))
    step = TrainStep(net, make_optimizer("gd", CPU64, net.params), X, one_hot(np, y, 10, np.float64), y)
    assert step.graph is False


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_cuda_graph_replay_matches_eager_steps(gpu, rng, name):
    """Replayed steps (captured at the second step of each batch shape) equal eager ones on the GPU."""
    X, y = dataset(rng, n=300)
    Xd, yd = gpu.asarray(X), gpu.asarray(y, dtype=np.int32)
    Yd = one_hot(gpu.xp, yd, 10, gpu.dtype)
    nets = {}
    for graph in (False, True):
        net = MLP(gpu, (784, 32, 10), seed=4)
        step = TrainStep(net, make_optimizer(name, gpu, net.params), Xd, Yd, yd, graph=graph)
        assert step.graph is graph
        for epoch in range(3):
            perm = gpu.permutation(300, (0, epoch))
            step.zero_sums()
            for s in range(0, 300, 64):  # four batches of 64, one of 44
                step(perm[s:s + 64], 0.01 * (epoch + 1))
        nets[graph] = (net.state_dict(), float(gpu.to_numpy(step.loss_sum)))
    for k, v in nets[False][0].items():
        np.testing.assert_allclose(nets[True][0][k], v, rtol=1e-5, atol=1e-6)
    assert nets[True][1] == pytest.approx(nets[False][1], rel=1e-5)


def test_every_device_sees_the_same_batches(gpu):
    """The epoch's permutation is drawn on the host from (seed, epoch): the same batches on cpu and cuda (the
    stand-in's own generator, as cuRAND's, draws differently from NumPy's), resumed or not."""
    from gpunet.core.backend import get_backend
    from gpunet.core.step import batches

    cpu = get_backend("cpu")
    for first in (0, 3):
        want = [(s, cpu.to_numpy(i)) for s, i in batches(cpu, 1000, 128, (7, 2), first)]
        got = [(s, gpu.to_numpy(i)) for s, i in batches(gpu, 1000, 128, (7, 2), first)]
        assert [s for s, _ in got] == [s for s, _ in want] == list(range(first, 8))
        for (_, a), (_, b) in zip(got, want):
            np.testing.assert_array_equal(a, b)
    assert list(batches(gpu, 100, 100, (7, 2))) == [(0, None)]
