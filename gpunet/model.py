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

from typing import Any

import numpy as np

from gpunet.backend import Backend

Array = Any  # numpy.ndarray or cupy.ndarray


class Buffers:
    """Arrays for the equations' `out=` arguments, asked for by name, shape and dtype.

    By default each request gets a new array, so a returned cache or grads dict belongs to the caller.
    With `keep=True` (the training step) each (name, shape, dtype) is allocated once and then reused: the
    step allocates nothing and its arrays keep their addresses (what a CUDA graph replay needs), but every
    call overwrites the previous call's results. `fill` initialises a new array (for constants such as ones).
    """

    def __init__(self, xp: Any, keep: bool = False):
        self.xp, self.keep = xp, keep
        self.arrays: dict[tuple[str, tuple[int, ...], str], Array] = {}

    def __call__(self, name: str, shape: tuple[int, ...], dtype: Any, fill: float | None = None) -> Array:
        key = (name, tuple(shape), np.dtype(dtype).str)
        a = self.arrays.get(key)
        if a is None:
            a = self.xp.empty(shape, dtype) if fill is None else self.xp.full(shape, fill, dtype)
            if self.keep:
                self.arrays[key] = a
        return a


class MLP:
    """784 -> hidden ReLU layers -> 10 softmax. `params` holds W1, b1, ..., WL, bL on the device."""

    def __init__(self, backend: Backend, sizes: tuple[int, ...] = (784, 128, 10), seed: int = 0):
        if len(sizes) < 2 or any(int(n) < 1 for n in sizes):
            raise ValueError(f"sizes must be at least two positive widths, got {sizes}")
        self.backend = backend
        self.sizes = tuple(int(n) for n in sizes)
        self.L = len(self.sizes) - 1
        # He initialisation on the host, so every backend starts from the same weights.
        rng = np.random.default_rng(seed)
        host = {}
        for l in range(1, self.L + 1):
            fan_in, fan_out = self.sizes[l - 1], self.sizes[l]
            host[f"W{l}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
            host[f"b{l}"] = np.zeros(fan_out)
        self.params = {k: backend.asarray(v) for k, v in host.items()}

    def forward(self, X: Array, buf: Buffers | None = None) -> dict[str, Array]:
        """X (m, 784) -> cache with A0 = X and Z1, A1, ..., ZL, AL (AL = softmax probabilities).

        Results go into arrays from `buf` (fresh ones by default; the training step passes reused ones)."""
        xp, p = self.backend.xp, self.params
        buf = buf or Buffers(xp)
        m = X.shape[0]
        cache = {"A0": X}
        A = X
        for l in range(1, self.L + 1):
            W, b = p[f"W{l}"], p[f"b{l}"]
            Z = xp.matmul(A, W, out=buf(f"Z{l}", (m, W.shape[1]), xp.result_type(A, W)))  # (m, n_l)
            Z += b
            if l < self.L:
                A = xp.maximum(Z, 0, out=buf(f"A{l}", Z.shape, Z.dtype))  # (m, n_l)
            else:
                A = softmax(xp, Z, buf)  # (m, 10)
            cache[f"Z{l}"], cache[f"A{l}"] = Z, A
        return cache

    def backward(self, cache: dict[str, Array], Y: Array, buf: Buffers | None = None) -> dict[str, Array]:
        """Gradients dW1, db1, ... of the mean cross-entropy, Y one-hot (m, 10); arrays from `buf` as in forward."""
        xp, p, L = self.backend.xp, self.params, self.L
        buf = buf or Buffers(xp)
        m = Y.shape[0]
        grads = {}
        AL = cache[f"A{L}"]
        dZ = xp.subtract(AL, Y, out=buf(f"dZ{L}", AL.shape, xp.result_type(AL, Y)))  # (m, 10)
        dZ /= m
        for l in range(L, 0, -1):
            A_prev, W = cache[f"A{l - 1}"], p[f"W{l}"]
            grads[f"dW{l}"] = xp.matmul(A_prev.T, dZ, out=buf(f"dW{l}", W.shape, xp.result_type(A_prev, dZ)))
            # db = 1^T dZ: the sum over the batch as a product, which BLAS does faster than a reduction.
            grads[f"db{l}"] = xp.matmul(buf("ones", (m,), dZ.dtype, 1), dZ, out=buf(f"db{l}", (W.shape[1],), dZ.dtype))
            if l > 1:
                Z_prev = cache[f"Z{l - 1}"]
                dA = xp.matmul(dZ, W.T, out=buf(f"dZ{l - 1}", Z_prev.shape, xp.result_type(dZ, W)))  # (m, n_{l-1})
                active = xp.greater(Z_prev, 0, out=buf(f"active{l - 1}", Z_prev.shape, np.bool_))
                dZ = xp.multiply(dA, active, out=dA)  # (m, n_{l-1}), dA masked in place
        return grads

    def loss(self, AL: Array, Y: Array, buf: Buffers | None = None) -> Array:
        """Mean cross-entropy, a 0-d device array; probabilities of 0 are clipped to the dtype's tiny.

        With Y one-hot, sum_k Y_ik log A_ik = log p_i, p_i = sum_k Y_ik A_ik the probability of the true class,
        so only m logarithms are taken."""
        xp = self.backend.xp
        buf = buf or Buffers(xp)
        m = Y.shape[0]
        dt = xp.result_type(AL, Y)
        AY = xp.multiply(AL, Y, out=buf("AY", AL.shape, dt))
        p = xp.matmul(AY, buf("ones", (AL.shape[1],), dt, 1), out=buf("p", (m,), dt))  # (m,) row sums
        xp.maximum(p, np.finfo(dt).tiny, out=p)
        J = xp.sum(xp.log(p, out=p), out=buf("J", (), dt))
        J /= -m
        return J

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities (m, 10)."""
        return self.forward(X)[f"A{self.L}"]

    def predict(self, X: Array) -> Array:
        """Class indices (m,)."""
        return self.predict_proba(X).argmax(axis=1)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters as host numpy arrays (a GPU-trained net loads on the CPU and back); copies, on every
        backend, so training on does not change them."""
        return {k: np.array(self.backend.to_numpy(v)) for k, v in self.params.items()}

    @classmethod
    def from_state_dict(cls, backend: Backend, state: dict[str, np.ndarray]) -> "MLP":
        """Rebuild a net from `state_dict()` output on any backend."""
        sizes = sizes_of(state)
        L = len(sizes) - 1
        net = cls.__new__(cls)
        net.backend, net.sizes, net.L = backend, tuple(sizes), L
        net.params = {k: backend.asarray(np.array(v)) for k, v in state.items()}  # copies: `state` stays as it is
        return net


def sizes_of(state: dict[str, np.ndarray]) -> tuple[int, ...]:
    """Layer widths of a state dict; ValueError unless it holds exactly W1, b1, ..., WL, bL that chain."""
    L = sum(1 for k in state if k.startswith("W"))
    expected = {f"{n}{l}" for l in range(1, L + 1) for n in "Wb"}
    if L < 1 or set(state) != expected:
        raise ValueError(f"parameters {sorted(state)} are not W1, b1, ..., WL, bL")
    sizes = [state["W1"].shape[0]]
    for l in range(1, L + 1):
        W, b = state[f"W{l}"], state[f"b{l}"]
        if W.ndim != 2 or W.shape[0] != sizes[-1] or b.shape != (W.shape[1],):
            raise ValueError(f"W{l} {W.shape} and b{l} {b.shape} do not follow a layer of width {sizes[-1]}")
        sizes.append(W.shape[1])
    return tuple(sizes)


def softmax(xp: Any, Z: Array, buf: Buffers | None = None) -> Array:
    """Row-wise softmax; subtracting the row max keeps exp finite for logits of any size."""
    buf = buf or Buffers(xp)
    m = Z.shape[0]
    E = xp.subtract(Z, xp.max(Z, axis=1, keepdims=True, out=buf("rowmax", (m, 1), Z.dtype)),
                    out=buf("softmax", Z.shape, Z.dtype))
    xp.exp(E, out=E)
    E /= xp.matmul(E, buf("ones", (Z.shape[1], 1), Z.dtype, 1), out=buf("rowsum", (m, 1), Z.dtype))  # row sums
    return E


def one_hot(xp: Any, labels: Array, num_classes: int, dtype: Any) -> Array:
    """(m,) integer labels -> (m, num_classes) one-hot of `dtype`, on the labels' device."""
    return (labels[:, None] == xp.arange(num_classes)).astype(dtype)
