r"""A multilayer perceptron with hand-derived gradients, written once with `xp` (NumPy or CuPy).

Shapes are batch-first: m samples, sizes n_0 (784 pixels for MNIST), n_1 .. n_{L-1} hidden, n_L outputs
(10 classes). The default net is 784 -> 128 ReLU -> 10 softmax (L = 2); hidden activations f and the output
come from `gpunet.core.activations`, where each derivative is derived.

Forward, with A_0 = X (m, n_0):
    Z_l = A_{l-1} @ W_l + b_l            # (m, n_l)   W_l (n_{l-1}, n_l), b_l (n_l,) broadcast over rows
    A_l = f(Z_l)                         # (m, n_l)   for l < L: relu max(Z, 0), tanh, logistic or identity
    A_L = g(Z_L)                         # (m, n_L)   softmax exp(Z - rowmax) / rowsum, logistic or identity

Loss, the mean over the m rows (Y one-hot for softmax, an indicator for logistic, targets for identity):
    J = -(1/m) sum_i sum_k Y_ik log A_L,ik                                   softmax
    J = -(1/m) sum_i sum_k [Y log A_L + (1 - Y) log(1 - A_L)]_ik              logistic
    J = (1/(2 m n_L)) sum_i sum_k (A_L,ik - Y_ik)^2                          identity
  plus, with an L2 penalty alpha, (alpha / (2 m)) sum_l ||W_l||^2 (the estimator's `alpha`; 0 in `gpunet train`).

Backward (the chain rule, layer by layer):
    dZ_L = (A_L - Y) / m                 # (m, n_L)      dJ/dZ_L: each output with its loss (below)
    dW_l = A_{l-1}.T @ dZ_l              # (n_{l-1}, n_l)   (+ (alpha / m) W_l with the penalty)
    db_l = 1^T dZ_l                      # (n_l,)        dZ_l summed over the batch axis
    dA_{l-1} = dZ_l @ W_l.T              # (m, n_{l-1})
    dZ_{l-1} = dA_{l-1} * f'(Z_{l-1})    # (m, n_{l-1})  relu [Z > 0], tanh 1 - A^2, logistic A (1 - A), identity 1

The derivatives, by hand (no autograd; `gpunet.core.activations` pairs each with its function):
    relu      f'(Z) = [Z > 0]                                  slope 1 where Z > 0, 0 elsewhere
    tanh      f'(Z) = 1 / cosh(Z)^2 = 1 - tanh(Z)^2 = 1 - A^2
    logistic  f'(Z) = exp(-Z) / (1 + exp(-Z))^2 = A (1 - A)
    identity  f'(Z) = 1
    softmax with cross-entropy: dA_j/dZ_k = A_j ([j = k] - A_k), so
              dJ/dZ_k = (1/m) sum_j (-Y_j / A_j) A_j ([j = k] - A_k) = (A_k - Y_k) / m   (sum_j Y_j = 1)
    logistic with binary cross-entropy: dJ/dA = (1/m) (-Y / A + (1 - Y) / (1 - A)), times dA/dZ = A (1 - A):
              dJ/dZ = (A - Y) / m
    identity with squared error: dJ/dZ = (A - Y) / (m n_L); the step uses (A - Y) / m, as scikit-learn's does
              (the same for one output)

For L = 2 with ReLU and softmax this is: dZ2 = (A2 - Y)/m, dW2 = A1.T @ dZ2, db2 = sum(dZ2),
dZ1 = (dZ2 @ W2.T) * [Z1 > 0], dW1 = X.T @ dZ1, db1 = sum(dZ1). Gradient descent then steps W := W - lr dW.

Corrections to the seed write-up this project started from:
- It writes dZ2 = Y - A2. That is -dJ/dZ2; with the update W := W - alpha dW it climbs the loss.
  The gradient is dZ2 = A2 - Y (times 1/m when J is the batch mean).
- It lists Z1 as 10 x m. Z1 has one column per hidden unit: (m, h) batch-first, h x m feature-first.
- With Z2 = A1 W2 (batch-first), W2 is h x 10, not 10 x h; W1 is 784 x h.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpunet.core.activations import ACTIVATIONS, OUTPUTS, delta, softmax  # noqa: F401  (softmax: public here too)
from gpunet.core.backend import Backend
from gpunet.core.init import he_normal

Array = Any  # numpy.ndarray or cupy.ndarray


class Workspace:
    """Every array the equations write for a batch of m samples, allocated once, named per layer l = 1..L:
    Z[l], A[l] (A[0] is the batch X), dZ[l], dW[l], db[l], the derivatives fprime[l] = f'(Z_l) of the hidden
    layers (a bool mask for ReLU, none for identity) and the softmax's and loss's row vectors. The training step
    keeps one per row count, a batch's or a row chunk's (fixed addresses for a CUDA graph), and sums the
    gradients into arrays of its own; the public forward and backward make a fresh one, so their results belong
    to the caller."""

    def __init__(self, xp: Any, sizes: tuple[int, ...], m: int, dtype: Any, activation: str = "relu"):
        f = ACTIVATIONS[activation]
        self.m, L = m, len(sizes) - 1  # sizes (k,) alone: the loss's arrays only
        self.A: list[Array] = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]  # A[0] = X, set by forward
        self.Z = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]
        self.dZ = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]
        self.dW = [None] + [xp.empty((a, b), dtype) for a, b in zip(sizes[:-1], sizes[1:])]
        self.db = [None] + [xp.empty(n, dtype) for n in sizes[1:]]
        self.fprime = [None] + [None if f.derivative is None else xp.empty((m, n), np.bool_ if f.mask else dtype)
                                for n in sizes[1:L]]
        self.ones = xp.ones(max(m, sizes[-1]), dtype)  # the ones vector of colsum and of the row sums
        self.rowmax, self.rowsum, self.p = xp.empty((m, 1), dtype), xp.empty((m, 1), dtype), xp.empty(m, dtype)
        self.AY = xp.empty((m, sizes[-1]), dtype)
        self.J = xp.empty((), dtype)

    def __getitem__(self, name: str) -> Array:
        """The arrays by the docstring's names: ws["Z1"] is ws.Z[1], ws["A2"] is ws.A[2]."""
        kind = name.rstrip("0123456789")
        return getattr(self, kind)[int(name[len(kind):])]


class MLP:
    """n_0 -> hidden layers of `activation` -> n_L `output`; by default 784 -> 128 ReLU -> 10 softmax with He
    initial weights from `seed`. W[l], b[l] (l = 1..L) on the device; `params` names them W1, b1, ..., WL, bL for
    files and optimizers (the same arrays). `floor`: the smallest probability the loss takes the log of (None:
    the dtype's tiny)."""

    def __init__(self, backend: Backend, sizes: tuple[int, ...] = (784, 128, 10), seed: int = 0,
                 activation: str = "relu", output: str = "softmax"):
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"sizes must be at least two positive widths, got {sizes}")
        self._load(backend, he_normal(tuple(int(n) for n in sizes), np.random.default_rng(seed)), activation, output)

    def _load(self, backend: Backend, state: dict[str, np.ndarray], activation: str, output: str) -> None:
        if activation not in ACTIVATIONS or output not in OUTPUTS:
            raise ValueError(f"activation {activation!r} or output {output!r} is not one of "
                             f"{', '.join(ACTIVATIONS)} / {', '.join(OUTPUTS)}")
        self.backend, self.activation, self.output = backend, activation, output
        self.f, self.g = ACTIVATIONS[activation], OUTPUTS[output]
        self.floor: float | None = None
        self.sizes = sizes_of(state)
        self.L = len(self.sizes) - 1
        self.W = [None] + [backend.asarray(np.array(state[f"W{l}"])) for l in range(1, self.L + 1)]
        self.b = [None] + [backend.asarray(np.array(state[f"b{l}"])) for l in range(1, self.L + 1)]
        self.params: dict[str, Array] = {f"{n}{l}": P[l] for l in range(1, self.L + 1)
                                         for n, P in (("W", self.W), ("b", self.b))}

    def workspace(self, m: int) -> Workspace:
        return Workspace(self.backend.xp, self.sizes, m, self.W[1].dtype, self.activation)

    def forward(self, X: Array, ws: Workspace | None = None) -> Workspace:
        """X (m, n_0), dense or sparse, -> ws with A[0] = X and Z[1], A[1], ..., Z[L], A[L] (A[L] = the outputs)."""
        xp, gemm = self.backend.xp, self.backend.gemm
        ws = ws or self.workspace(X.shape[0])
        ws.A[0] = X
        for l in range(1, self.L + 1):
            Z = (sparse_gemm if l == 1 and is_sparse(X) else gemm)(ws.A[l - 1], self.W[l], out=ws.Z[l])
            #                                              Z_l = A_{l-1} @ W_l   (m, n_l)
            Z += self.b[l]                                  #       + b_l
            if l < self.L:
                self.f.forward(xp, Z, ws.A[l])              # A_l = f(Z_l)          (m, n_l)
            else:
                self.g.forward(xp, Z, ws.A[l], ws)          # A_L = g(Z_L)          (m, n_L)
        return ws

    def backward(self, ws: Workspace, Y: Array, dW: list[Array] | None = None, db: list[Array] | None = None,
                 beta: Any = 0.0, m: int | None = None) -> dict[str, Array]:
        """Gradients of the mean loss, Y (ws.m, n_L) as the loss takes it, after `forward(X, ws)`: into ws.dW,
        ws.db, or with beta != 0 added into dW[l] := beta dW[l] + dJ/dW_l (momentum's v := mu v + dW in the
        product; beta = 1 sums a batch's row chunks). `m` is the batch size the mean is over: ws.m unless ws
        holds one row chunk of the batch. Returns them named dW1, db1, ..."""
        xp, gemm, colsum = self.backend.xp, self.backend.gemm, self.backend.colsum
        dW, db, L, f = dW or ws.dW, db or ws.db, self.L, self.f
        ones = ws.ones[:ws.m]
        dZ = delta(xp, ws.A[L], Y, m or ws.m, out=ws.dZ[L])  # dZ_L = (A_L - Y) / m   (m, n_L)
        for l in range(L, 0, -1):
            (sparse_gemm if l == 1 and is_sparse(ws.A[0]) else gemm)(ws.A[l - 1].T, dZ, out=dW[l], beta=beta)
            #                                               dW_l = A_{l-1}.T @ dZ_l   (n_{l-1}, n_l)
            colsum(dZ, ones, out=db[l], beta=beta)          # db_l = 1^T dZ_l          (n_l,)
            if l > 1:
                dA = gemm(dZ, self.W[l].T, out=ws.dZ[l - 1])  # dA_{l-1} = dZ_l @ W_l.T   (m, n_{l-1})
                if f.derivative is not None:                  # dZ_{l-1} = dA_{l-1} * f'(Z_{l-1})
                    xp.multiply(dA, f.derivative(xp, ws.Z[l - 1], ws.A[l - 1], ws.fprime[l - 1]), out=dA)
                dZ = dA
        return {f"d{n}{l}": G[l] for l in range(1, L + 1) for n, G in (("W", dW), ("b", db))}

    def loss(self, AL: Array, Y: Array, ws: Workspace | None = None) -> Array:
        """The mean loss of the outputs AL (m, n_L) against Y, a 0-d device array (ws.J); probabilities are
        clipped to [floor, 1 - floor]."""
        ws = ws or Workspace(self.backend.xp, AL.shape[1:], AL.shape[0], AL.dtype)  # the loss's arrays only
        floor = np.finfo(ws.J.dtype).tiny if self.floor is None else self.floor
        return self.g.loss(self.backend.xp, AL, Y, ws, floor)

    def predict_proba(self, X: Array) -> Array:
        """The outputs A_L (m, n_L): class probabilities for softmax."""
        return self.forward(X).A[self.L]

    def predict(self, X: Array) -> Array:
        """Class indices (m,)."""
        return self.predict_proba(X).argmax(axis=1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters as host numpy arrays (a GPU-trained net loads on the CPU and back); copies, on every
        backend, so training on does not change them."""
        return {k: np.array(self.backend.to_numpy(v)) for k, v in self.params.items()}

    @classmethod
    def from_state_dict(cls, backend: Backend, state: dict[str, np.ndarray], activation: str = "relu",
                        output: str = "softmax") -> "MLP":
        """Rebuild a net from `state_dict()` output (or initial weights from `gpunet.core.init`) on any backend
        (copies: `state` stays as it is)."""
        net = cls.__new__(cls)
        net._load(backend, state, activation, output)
        return net


def gemm_flops(m: int, sizes: Sequence[int]) -> float:
    """FLOPs of one training pass over m samples: forward, dW and dA products, no gradient w.r.t. the input."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2.0 * m * (2 * sum(a * b for a, b in pairs) + sum(a * b for a, b in pairs[1:]))


def sizes_of(state: dict[str, np.ndarray]) -> tuple[int, ...]:
    """Layer widths of a state dict; ValueError unless it holds exactly W1, b1, ..., WL, bL that chain."""
    L = sum(1 for k in state if k.startswith("W"))
    expected = {f"{n}{l}" for l in range(1, L + 1) for n in "Wb"}
    if L < 1 or set(state) != expected:
        raise ValueError(f"parameters {sorted(state)} are not W1, b1, ..., WL, bL")
    sizes: list[int] = []
    for l in range(1, L + 1):
        W, b = state[f"W{l}"], state[f"b{l}"]
        shape_w, shape_b = tuple(getattr(W, "shape", ())), tuple(getattr(b, "shape", ()))
        if len(shape_w) != 2 or 0 in shape_w or (sizes and shape_w[0] != sizes[-1]) or shape_b != shape_w[1:]:
            raise ValueError(f"W{l} {shape_w} and b{l} {shape_b} do not follow a layer"
                             + (f" of width {sizes[-1]}" if sizes else "") + " (W is 2-d, b 1-d as wide)")
        sizes += list(shape_w) if not sizes else [shape_w[1]]
    return tuple(sizes)


def is_sparse(X: Array) -> bool:
    """Whether X is a scipy.sparse or cupyx.scipy.sparse matrix (the first layer's input may be)."""
    return hasattr(X, "tocsr")


def sparse_gemm(A: Any, B: Array, out: Array, beta: float = 0.0) -> Array:
    """out := A @ B + beta out for a sparse A: the sparse library's product, then a copy into `out`."""
    if beta:
        out *= beta
        out += A @ B
    else:
        out[...] = A @ B
    return out


def one_hot(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    """(m,) integer labels -> (m, num_classes) one-hot of `dtype`, on the labels' device."""
    return (labels[:, None] == xp.arange(num_classes)).astype(dtype)
