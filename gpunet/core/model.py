r"""A multilayer perceptron with hand-derived gradients, written once with `xp` (NumPy or CuPy).

Shapes are batch-first: m samples, sizes n_0 = 784, n_1 .. n_{L-1} hidden, n_L = 10 classes.
The default net is 784 -> 128 ReLU -> 10 softmax (L = 2).

Forward, with A_0 = X (m, 784):
    Z_l = A_{l-1} @ W_l + b_l            # (m, n_l)   W_l (n_{l-1}, n_l), b_l (n_l,) broadcast over rows
    A_l = ReLU(Z_l) = max(Z_l, 0)        # (m, n_l)   for l < L
    A_L = softmax(Z_L)                   # (m, 10)    row-wise: exp(Z - rowmax) / rowsum

Loss, with Y one-hot (m, 10):
    J = -(1/m) * sum_i sum_k Y_ik * log(A_L,ik)

Backward (the chain rule, layer by layer):
    dZ_L = (A_L - Y) / m                 # (m, 10)      dJ/dZ_L: softmax and cross-entropy combined
    dW_l = A_{l-1}.T @ dZ_l              # (n_{l-1}, n_l)
    db_l = dZ_l summed over rows         # (n_l,)       over the batch axis only
    dA_{l-1} = dZ_l @ W_l.T              # (m, n_{l-1})
    dZ_{l-1} = dA_{l-1} * [Z_{l-1} > 0]  # (m, n_{l-1}) ReLU passes the gradient where it was active

For L = 2 this is: dZ2 = (A2 - Y)/m, dW2 = A1.T @ dZ2, db2 = sum(dZ2), dZ1 = (dZ2 @ W2.T) * [Z1 > 0],
dW1 = X.T @ dZ1, db1 = sum(dZ1). Gradient descent then steps W := W - alpha * dW.

Corrections to the seed write-up this project started from:
- It writes dZ2 = Y - A2. That is -dJ/dZ2; with the update W := W - alpha dW it climbs the loss.
  The gradient is dZ2 = A2 - Y (times 1/m when J is the batch mean).
- It lists Z1 as 10 x m. Z1 has one column per hidden unit: (m, h) batch-first, h x m feature-first.
- With Z2 = A1 W2 (batch-first), W2 is h x 10, not 10 x h; W1 is 784 x h.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from gpunet.core.backend import Backend

Array = Any  # numpy.ndarray or cupy.ndarray


class Workspace:
    """Every array the equations write for a batch of m samples, allocated once, named per layer l = 1..L:
    Z[l], A[l] (A[0] is the batch X), dZ[l], dW[l], db[l], the ReLU masks active[l] and the softmax's and
    loss's row vectors. The training step keeps one per row count, a batch's or a row chunk's (fixed addresses
    for a CUDA graph), and sums the gradients into arrays of its own; the public forward and backward make a
    fresh one, so their results belong to the caller."""

    def __init__(self, xp: Any, sizes: tuple[int, ...], m: int, dtype: Any):
        self.m, L = m, len(sizes) - 1  # sizes (k,) alone: the loss's arrays only
        self.A: list[Array] = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]  # A[0] = X, set by forward
        self.Z = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]
        self.dZ = [None] + [xp.empty((m, n), dtype) for n in sizes[1:]]
        self.dW = [None] + [xp.empty((a, b), dtype) for a, b in zip(sizes[:-1], sizes[1:])]
        self.db = [None] + [xp.empty(n, dtype) for n in sizes[1:]]
        self.active = [None] + [xp.empty((m, n), np.bool_) for n in sizes[1:L]]
        self.ones = xp.ones(max(m, sizes[-1]), dtype)  # the ones vector of colsum and rowsum
        self.rowmax, self.rowsum, self.p = xp.empty((m, 1), dtype), xp.empty((m, 1), dtype), xp.empty(m, dtype)
        self.AY = xp.empty((m, sizes[-1]), dtype)
        self.J = xp.empty((), dtype)

    def __getitem__(self, name: str) -> Array:
        """The arrays by the docstring's names: ws["Z1"] is ws.Z[1], ws["A2"] is ws.A[2]."""
        kind = name.rstrip("0123456789")
        return getattr(self, kind)[int(name[len(kind):])]


class MLP:
    """784 -> hidden ReLU layers -> 10 softmax. W[l], b[l] (l = 1..L) on the device; `params` names them
    W1, b1, ..., WL, bL for files and optimizers (the same arrays)."""

    def __init__(self, backend: Backend, sizes: tuple[int, ...] = (784, 128, 10), seed: int = 0):
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"sizes must be at least two positive widths, got {sizes}")
        sizes = tuple(int(n) for n in sizes)
        # He initialisation on the host, so every backend starts from the same weights.
        rng = np.random.default_rng(seed)
        host = {}
        for l in range(1, len(sizes)):
            fan_in, fan_out = sizes[l - 1], sizes[l]
            host[f"W{l}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            host[f"b{l}"] = np.zeros(fan_out)
        self._load(backend, host)

    def _load(self, backend: Backend, state: dict[str, np.ndarray]) -> None:
        self.backend = backend
        self.sizes = sizes_of(state)
        self.L = len(self.sizes) - 1
        self.W = [None] + [backend.asarray(np.array(state[f"W{l}"])) for l in range(1, self.L + 1)]
        self.b = [None] + [backend.asarray(np.array(state[f"b{l}"])) for l in range(1, self.L + 1)]
        self.params: dict[str, Array] = {f"{n}{l}": P[l] for l in range(1, self.L + 1)
                                         for n, P in (("W", self.W), ("b", self.b))}

    def workspace(self, m: int) -> Workspace:
        return Workspace(self.backend.xp, self.sizes, m, self.W[1].dtype)

    def forward(self, X: Array, ws: Workspace | None = None) -> Workspace:
        """X (m, 784) -> ws with A[0] = X and Z[1], A[1], ..., Z[L], A[L] (A[L] = softmax probabilities)."""
        xp, gemm = self.backend.xp, self.backend.gemm
        ws = ws or self.workspace(X.shape[0])
        ws.A[0] = X
        for l in range(1, self.L + 1):
            Z = gemm(ws.A[l - 1], self.W[l], out=ws.Z[l])  # Z_l = A_{l-1} @ W_l   (m, n_l)
            Z += self.b[l]                                  #       + b_l
            if l < self.L:
                xp.maximum(Z, 0, out=ws.A[l])  # A_l = ReLU(Z_l)   (m, n_l)
            else:
                softmax(xp, Z, ws.A[l], ws.rowmax, self.rowsum(ws.A[l], ws))  # A_L = softmax(Z_L)   (m, 10)
        return ws

    def rowsum(self, M: Array, ws: Workspace) -> Callable[[], Array]:
        """M 1 into ws.rowsum (m, 1), as a function: softmax sums its exponentials through it."""
        return lambda: self.backend.gemm(M, ws.ones[:M.shape[1], None], out=ws.rowsum)

    def backward(self, ws: Workspace, Y: Array, dW: list[Array] | None = None, db: list[Array] | None = None,
                 beta: Any = 0.0, m: int | None = None) -> dict[str, Array]:
        """Gradients of the mean cross-entropy, Y one-hot (ws.m, 10), after `forward(X, ws)`: into ws.dW, ws.db,
        or with beta != 0 added into dW[l] := beta dW[l] + dJ/dW_l (momentum's v := mu v + dW in the product;
        beta = 1 sums a batch's row chunks). `m` is the batch size the mean is over: ws.m unless ws holds one
        row chunk of the batch. Returns them named dW1, db1, ..."""
        xp, gemm, colsum = self.backend.xp, self.backend.gemm, self.backend.colsum
        dW, db, L = dW or ws.dW, db or ws.db, self.L
        ones = ws.ones[:ws.m]
        dZ = xp.subtract(ws.A[L], Y, out=ws.dZ[L])  # dZ_L = (A_L - Y) / m   (m, 10)
        dZ /= m or ws.m
        for l in range(L, 0, -1):
            gemm(ws.A[l - 1].T, dZ, out=dW[l], beta=beta)  # dW_l = A_{l-1}.T @ dZ_l   (n_{l-1}, n_l)
            colsum(dZ, ones, out=db[l], beta=beta)          # db_l = 1^T dZ_l          (n_l,)
            if l > 1:
                dA = gemm(dZ, self.W[l].T, out=ws.dZ[l - 1])  # dA_{l-1} = dZ_l @ W_l.T   (m, n_{l-1})
                dZ = xp.multiply(dA, xp.greater(ws.Z[l - 1], 0, out=ws.active[l - 1]), out=dA)  # * [Z_{l-1} > 0]
        return {f"d{n}{l}": G[l] for l in range(1, L + 1) for n, G in (("W", dW), ("b", db))}

    def loss(self, AL: Array, Y: Array, ws: Workspace | None = None) -> Array:
        """Mean cross-entropy of the probabilities AL (m, 10), a 0-d device array (ws.J); probabilities of 0 are
        clipped to the dtype's tiny. With Y one-hot, sum_k Y_ik log A_ik = log p_i, p_i = sum_k Y_ik A_ik the
        probability of the true class, so only m logarithms are taken."""
        xp = self.backend.xp
        ws = ws or Workspace(xp, AL.shape[1:], AL.shape[0], AL.dtype)  # the loss's arrays only
        dt = ws.J.dtype
        AY = xp.multiply(AL, Y, out=ws.AY)
        p = self.backend.gemm(AY, ws.ones[:AY.shape[1], None], out=ws.p[:, None])[:, 0]  # (m,) row sums
        xp.maximum(p, np.finfo(dt).tiny, out=p)
        J = xp.log(p, out=p).sum(out=ws.J)
        J /= -ws.m
        return J

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities (m, 10)."""
        return self.forward(X).A[self.L]

    def predict(self, X: Array) -> Array:
        """Class indices (m,)."""
        return self.predict_proba(X).argmax(axis=1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters as host numpy arrays (a GPU-trained net loads on the CPU and back); copies, on every
        backend, so training on does not change them."""
        return {k: np.array(self.backend.to_numpy(v)) for k, v in self.params.items()}

    @classmethod
    def from_state_dict(cls, backend: Backend, state: dict[str, np.ndarray]) -> "MLP":
        """Rebuild a net from `state_dict()` output on any backend (copies: `state` stays as it is)."""
        net = cls.__new__(cls)
        net._load(backend, state)
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


def softmax(xp: Any, Z: Array, out: Array | None = None, rowmax: Array | None = None,
            rowsum: Callable[[], Array] | None = None) -> Array:
    """Row-wise softmax of Z (m, k) into `out`; subtracting the row max keeps exp finite for logits of any size.
    `rowsum()` returns the row sums of `out` (by default a reduction; the model's passes a product)."""
    E = xp.subtract(Z, Z.max(axis=1, keepdims=True, out=rowmax), out=out)
    xp.exp(E, out=E)
    E /= rowsum() if rowsum else E.sum(axis=1, keepdims=True)
    return E


def one_hot(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    """(m,) integer labels -> (m, num_classes) one-hot of `dtype`, on the labels' device."""
    return (labels[:, None] == xp.arange(num_classes)).astype(dtype)
