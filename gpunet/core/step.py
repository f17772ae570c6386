"""The training step as `gpunet train` and `gpunet bench` run it: the model's equations on reused arrays.

One step gathers a batch from the device-resident training set, runs `net.forward`, adds the batch's loss
and correct count to device accumulators, runs `net.backward` and the optimizer update. The equations write
into one `Workspace` per row count and the gather and sums into `Buffers`, so after the first step of each
batch shape nothing is allocated (but the temporaries of NumPy's `out += A @ B` when a chunked batch sums its
products, below), and nothing is read back to the host. The optimizer says where
the gradient products go (`Optimizer.targets`): momentum's are added straight into its velocity.

On the CPU a batch larger than `backend.chunk_rows` (4096) runs in row chunks: each chunk's forward and
backward, with the products of its backward added into the batch's gradients (GEMM's beta = 1). The gradient
of the batch mean is the sum of the chunks' terms, so this is the same step, but its arrays hold 4096 rows
instead of the whole batch's (30 MB each for a 128-wide layer at 60,000 rows).

On cuda the step can also be replayed as a CUDA graph (`GPUNET_CUDA_GRAPH=1`, or `graph=True`): the first
step of each batch shape runs normally (allocating the arrays and compiling the kernels), the second is
captured with `Backend.capture`, and from then on each step is one graph launch plus two or three small
copies of its inputs (the batch indices and the optimizer's scalars) into fixed device arrays. This cuts
the kernel launches of a step from about 40 to 3 or 4, which is what bounds small batches on a GPU. It has
no effect on the CPU. The optimizer's occasional flush of tiny state (`Optimizer.flush`) runs outside it.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterator

import numpy as np

from gpunet.core.backend import Backend
from gpunet.core.model import MLP, Workspace, is_sparse
from gpunet.core.optim import Optimizer

Array = Any
GRAPH_ENV = "GPUNET_CUDA_GRAPH"


class Buffers:
    """The step's arrays beside the equations' (the batch gather, the sums), asked for by name, shape and dtype:
    each allocated once and then reused, so they keep their addresses (what a CUDA graph replay needs)."""

    def __init__(self, xp: Any):
        self.xp = xp
        self.arrays: dict[tuple[str, tuple[int, ...], Any], Array] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array:
        key = (name, shape, dtype)
        a = self.arrays.get(key)
        if a is None:
            a = self.arrays[key] = self.xp.empty(shape, dtype)
        return a


def batches(backend: Backend, n: int, B: int, seed: tuple[int, ...],
            first: int = 0) -> Iterator[tuple[int, Array | None]]:
    """One epoch over n rows in batches of B: (s, idx) for steps s = first, ..., idx (B,) a slice of the epoch's
    permutation, drawn on the host from `seed` (`Backend.permutation`), so every device and a resumed run see the
    same batches; idx is None for the single step of the full batch."""
    steps = math.ceil(n / B)
    perm = None if steps == 1 else backend.permutation(n, seed)
    for s in range(first, steps):
        yield s, None if perm is None else perm[s * B:(s + 1) * B]


class TrainStep:
    """`step(idx, lr)`: one update on the samples `idx` of (X, Y, y) (all of them when `idx` is None). `y`, the
    labels the correct count is taken against, may be None (no count). With `alpha` > 0 the loss has the L2
    penalty (alpha / (2 m)) sum_l ||W_l||^2 and each dW_l gets (alpha / m) W_l, m the batch size."""

    def __init__(self, net: MLP, opt: Optimizer, X: Array, Y: Array, y: Array | None, graph: bool | None = None,
                 alpha: float = 0.0):
        self.net, self.opt, self.backend, self.alpha = net, opt, net.backend, alpha
        xp = self.backend.xp
        self.X, self.Y, self.y = X, Y, y  # (n, 784), (n, 10) one-hot, (n,) labels, on the device
        self.sparse = is_sparse(X)  # X may be a scipy.sparse (cupyx.scipy.sparse) CSR matrix
        self.buf = Buffers(xp)
        self.workspaces: dict[int, Workspace] = {}  # rows (batch or chunk size) -> the equations' arrays
        self.dW = [None] + [xp.empty_like(W) for W in net.W[1:]]  # the batch's gradients, summed over its chunks
        self.db = [None] + [xp.empty_like(b) for b in net.b[1:]]
        self.loss_sum = xp.zeros((), dtype=net.W[1].dtype)  # sum of per-sample losses this epoch
        self.correct = xp.zeros((), dtype=xp.int64)  # correct predictions this epoch
        if graph is None:
            graph = os.environ.get(GRAPH_ENV, "") == "1"
        self.graph = graph and self.backend.can_capture
        self.replays: dict[int | None, Callable[[], None] | None] = {}  # batch size -> graph (None: warming up)
        # The graph's optimizer scalars, in the parameters' dtype as NumPy casts a Python float scalar.
        self.coefs = xp.zeros(len(opt.coefficients(1.0, 1)), dtype=net.W[1].dtype)

    def zero_sums(self) -> tuple[Array, Array]:
        """Zero the epoch's accumulators and return them (device 0-d arrays the steps add to)."""
        self.loss_sum.fill(0)
        self.correct.fill(0)
        return self.loss_sum, self.correct

    def batches(self, B: int, seed: tuple[int, ...], first: int = 0) -> Iterator[tuple[int, Array | None]]:
        """One epoch of the training set in batches of B (see `batches`)."""
        return batches(self.backend, self.X.shape[0], B, seed, first)

    def __call__(self, idx: Array | None, lr: float) -> None:
        self.opt.advance(lr, self.replay_or_run, idx)

    def replay_or_run(self, idx: Array | None, coefs: tuple[float, ...]) -> None:
        if not self.graph:
            self.run(idx, coefs)
            return
        key = None if idx is None else idx.shape[0]
        if idx is not None:  # the graph reads the batch's indices from a fixed array
            fixed = self.buf("idx", idx.shape, idx.dtype)
            self.backend.xp.copyto(fixed, idx)
            idx = fixed
        for j, c in enumerate(coefs):
            self.coefs[j].fill(c)
        scalars = tuple(self.coefs[j] for j in range(len(coefs)))
        if key not in self.replays:  # first step of this shape: run it, allocating every array
            self.run(idx, scalars)
            self.replays[key] = None
            return
        if self.replays[key] is None:
            self.replays[key] = self.backend.capture(lambda: self.run(idx, scalars))
        self.replays[key]()

    def run(self, idx: Array | None, coefs: tuple[Any, ...]) -> None:
        """The step's device work, in row chunks of at most `backend.chunk_rows` (one chunk on a GPU): for each,
        gather, forward, loss and accuracy sums, and backward adding into the batch's gradients; then the
        update."""
        net, n = self.net, self.X.shape[0] if idx is None else idx.shape[0]
        dW, db, beta = self.opt.targets(self.dW, self.db)
        C = self.backend.chunk_rows or n
        for first in range(0, n, C):
            X, Y, y = self.rows(idx, first, min(first + C, n))
            m = X.shape[0]
            ws = self.workspaces.get(m) or self.workspaces.setdefault(m, net.workspace(m))
            self.add_sums(net.forward(X, ws).A[net.L], Y, y, ws)
            grads = net.backward(ws, Y, dW, db, beta, m=n)  # the chunks' products add up to the batch's
            beta = 1.0
        if self.alpha:
            self.penalize(dW, n)
        self.opt.apply(net.params, grads, coefs)

    def penalize(self, dW: list[Array], m: int) -> None:
        """The L2 penalty of a batch of m rows: its loss, m (alpha / (2 m)) sum_l ||W_l||^2, added to the loss
        sum, and dW_l += (alpha / m) W_l."""
        xp, W = self.backend.xp, self.net.W
        for l in range(1, self.net.L + 1):
            w = W[l].ravel()
            self.loss_sum += xp.vdot(w, w) * (0.5 * self.alpha)         # J += (alpha / 2m) ||W_l||^2, times m
            self.backend.axpy(self.alpha / m, W[l], dW[l], self.buf("alpha W", W[l].shape, W[l].dtype))

    def rows(self, idx: Array | None, start: int, stop: int) -> tuple[Array, Array, Array | None]:
        """Rows start:stop of the batch (X, Y, y): views of the training set for the full batch, else gathered
        into reused arrays."""
        y = self.y
        if self.sparse:  # a sparse X's rows: the sparse library's gather (a new matrix)
            rows = slice(start, stop) if idx is None else idx[start:stop]
            X, Y = self.X[rows], self.Y[rows]
            return X, Y, None if y is None else y[rows]
        if idx is None:
            return self.X[start:stop], self.Y[start:stop], None if y is None else y[start:stop]
        idx, m, take, buf = idx[start:stop], stop - start, self.backend.take_rows, self.buf
        return (take(self.X, idx, buf("X", (m, self.X.shape[1]), self.X.dtype)),
                take(self.Y, idx, buf("Y", (m, self.Y.shape[1]), self.Y.dtype)),
                None if y is None else take(y, idx, buf("y", (m,), y.dtype)))

    def add_sums(self, AL: Array, Y: Array, y: Array | None, ws: Workspace) -> None:
        """Add the rows' summed loss and correct predictions to the epoch's accumulators, on the device."""
        xp, buf, m = self.backend.xp, self.buf, ws.m
        J = self.net.loss(AL, Y, ws)
        J *= m
        self.loss_sum += J
        if y is None:
            return
        hits = xp.equal(AL.argmax(axis=1, out=buf("pred", (m,), np.int64)), y, out=buf("hits", (m,), np.bool_))
        self.correct += hits.sum(out=buf("nhits", (), np.int64))
