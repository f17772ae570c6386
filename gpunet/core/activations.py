r"""Hidden activations and output layers as named pairs, written once with `xp` (NumPy or CuPy), in place.

An `Activation` is f with its derivative: `forward(xp, Z, out)` writes A = f(Z) and `derivative(xp, Z, A, out)`
writes f'(Z) (from Z or from A, whichever is cheaper), so that backprop's dZ = dA * f'(Z). Derived by hand:

    relu      A = max(Z, 0)            f'(Z) = [Z > 0]         (a bool mask)
    tanh      A = tanh(Z)              f'(Z) = 1 - tanh(Z)^2 = 1 - A^2
    logistic  A = 1 / (1 + exp(-Z))    f'(Z) = exp(-Z) / (1 + exp(-Z))^2 = A (1 - A)
    identity  A = Z                    f'(Z) = 1               (no array: dZ = dA)

An `Output` is the last layer's function with its loss J (the mean over the m rows), `forward(xp, Z, out, ws)`
and `loss(xp, A, Y, ws, floor)`. Each output is paired with the loss whose gradient through it is the same
(the canonical link), so one derivative, `delta`, serves all three:

    softmax   A_k = exp(Z_k) / sum_j exp(Z_j)   J = -(1/m) sum_i sum_k Y_ik log A_ik       (Y one-hot)
              dJ/dZ_ik = (1/m) sum_j (-Y_ij / A_ij) dA_ij/dZ_ik,  dA_ij/dZ_ik = A_ij ([j = k] - A_ik)
                       = (1/m) (-Y_ik + A_ik sum_j Y_ij) = (A_ik - Y_ik) / m
    logistic  A = 1 / (1 + exp(-Z))             J = -(1/m) sum_i sum_k [Y log A + (1 - Y) log(1 - A)]_ik
              dJ/dZ = (1/m) (-Y / A + (1 - Y) / (1 - A)) A (1 - A) = (A - Y) / m
    identity  A = Z                             J = (1/(2 m k)) sum_i sum_k (A_ik - Y_ik)^2  (k outputs)
              delta = (A - Y) / m, scikit-learn's gradient for this loss (exactly dJ/dZ when k = 1)

The losses clip probabilities to [floor, 1 - floor] (gpunet's default floor: the dtype's tiny; scikit-learn's:
its eps), so a probability of exactly 0 or 1 costs a finite amount.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

Array = Any  # numpy.ndarray or cupy.ndarray


class Activation(NamedTuple):
    name: str
    forward: Callable[[Any, Array, Array], Array]  # (xp, Z, out) -> A = f(Z)
    derivative: Callable[[Any, Array, Array, Array], Array] | None  # (xp, Z, A, out) -> f'(Z); None: f' = 1
    mask: bool = False  # whether f'(Z) is a bool mask (its array's dtype)


def relu(xp: Any, Z: Array, out: Array) -> Array:
    return xp.maximum(Z, 0, out=out)  # A = max(Z, 0)


def relu_derivative(xp: Any, Z: Array, A: Array, out: Array) -> Array:
    return xp.greater(Z, 0, out=out)  # f'(Z) = [Z > 0]


def tanh(xp: Any, Z: Array, out: Array) -> Array:
    return xp.tanh(Z, out=out)


def tanh_derivative(xp: Any, Z: Array, A: Array, out: Array) -> Array:
    xp.multiply(A, A, out=out)  # A^2
    return xp.subtract(1, out, out=out)  # f'(Z) = 1 - A^2


def logistic(xp: Any, Z: Array, out: Array) -> Array:
    with np.errstate(over="ignore"):  # exp(-Z) = inf for Z << 0 gives A = 1 / inf = 0, as it should
        xp.exp(xp.negative(Z, out=out), out=out)  # exp(-Z)
    out += 1
    return xp.reciprocal(out, out=out)  # A = 1 / (1 + exp(-Z))


def logistic_derivative(xp: Any, Z: Array, A: Array, out: Array) -> Array:
    xp.subtract(1, A, out=out)  # 1 - A
    return xp.multiply(out, A, out=out)  # f'(Z) = A (1 - A)


def identity(xp: Any, Z: Array, out: Array) -> Array:
    xp.copyto(out, Z)  # A = Z
    return out


ACTIVATIONS = {
    "relu": Activation("relu", relu, relu_derivative, mask=True),
    "tanh": Activation("tanh", tanh, tanh_derivative),
    "logistic": Activation("logistic", logistic, logistic_derivative),
    "identity": Activation("identity", identity, None),
}


def softmax(xp: Any, Z: Array, out: Array | None = None, rowmax: Array | None = None,
            rowsum: Array | None = None, ones: Array | None = None) -> Array:
    """Row-wise softmax of Z (m, k) into `out`; subtracting the row max keeps exp finite for logits of any size.
    `rowmax` and `rowsum` (m, 1) take the row reductions (new arrays when None); with `ones` (at least k long)
    the row sums are the product E 1 (`rowsums`), else a reduction."""
    E = xp.subtract(Z, Z.max(axis=1, keepdims=True, out=rowmax), out=out)  # Z - rowmax   (m, k)
    xp.exp(E, out=E)                                                        # E = exp(Z - rowmax)
    S = E.sum(axis=1, keepdims=True, out=rowsum) if ones is None else rowsums(xp, E, ones, rowsum)
    E /= S                                                                  # A = E / (E 1)
    return E


def rowsums(xp: Any, M: Array, ones: Array, out: Array) -> Array:
    """M 1 into out (m, 1): the row sums of M (m, k) as a product with a ones vector. For (m, 10) rows this
    product beats the reduction M.sum(axis=1, keepdims=True, out=out) on the CPU: 2.5 against 5.0 us at m = 128,
    17 against 97 us at m = 4096, float32 and float64 alike (`python -m gpunet.bench.rowsum`, NumPy's OpenBLAS
    on a shared 2-core AMD EPYC)."""
    return xp.matmul(M, ones[:M.shape[1], None], out=out)


class Output(NamedTuple):
    name: str
    forward: Callable[[Any, Array, Array, Any], Array]  # (xp, Z, out, ws) -> A_L
    loss: Callable[[Any, Array, Array, Any, float], Array]  # (xp, A, Y, ws, floor) -> J, a 0-d device array


def softmax_output(xp: Any, Z: Array, out: Array, ws: Any) -> Array:
    return softmax(xp, Z, out, ws.rowmax, ws.rowsum, ws.ones)


def cross_entropy(xp: Any, A: Array, Y: Array, ws: Any, floor: float) -> Array:
    """-(1/m) sum_i log p_i with p_i = sum_k Y_ik A_ik, the probability of the true class (Y one-hot): only m
    logarithms."""
    AY = xp.multiply(A, Y, out=ws.AY)                    # (m, k)
    p = rowsums(xp, AY, ws.ones, ws.p[:, None])[:, 0]    # (m,)
    xp.clip(p, floor, 1 - floor, out=p)
    return mean_negative_log(xp, p, ws)


def mean_negative_log(xp: Any, P: Array, ws: Any) -> Array:
    """-(1/m) sum log P over all of P's entries, into ws.J (P is overwritten with its logarithms)."""
    J = xp.log(P, out=P).sum(out=ws.J)
    J /= -ws.m
    return J


def logistic_output(xp: Any, Z: Array, out: Array, ws: Any) -> Array:
    return logistic(xp, Z, out)


def binary_cross_entropy(xp: Any, A: Array, Y: Array, ws: Any, floor: float) -> Array:
    """-(1/m) sum [Y log A + (1 - Y) log(1 - A)] for an indicator Y (m, k): log of A where Y is 1, of 1 - A where
    it is 0."""
    P = xp.clip(A, floor, 1 - floor, out=ws.AY)
    Q = xp.where(Y > 0.5, P, 1 - P)  # (m, k): the probability of each label as it is
    return mean_negative_log(xp, Q, ws)


def identity_output(xp: Any, Z: Array, out: Array, ws: Any) -> Array:
    return identity(xp, Z, out)


def half_squared_error(xp: Any, A: Array, Y: Array, ws: Any, floor: float) -> Array:
    """(1/(2 m k)) sum (A - Y)^2 over the m rows and k outputs (`floor` is unused)."""
    D = xp.subtract(A, Y, out=ws.AY)
    xp.multiply(D, D, out=D)
    J = D.sum(out=ws.J)
    J /= 2 * D.size
    return J


OUTPUTS = {
    "softmax": Output("softmax", softmax_output, cross_entropy),
    "logistic": Output("logistic", logistic_output, binary_cross_entropy),
    "identity": Output("identity", identity_output, half_squared_error),
}


def delta(xp: Any, A: Array, Y: Array, m: int, out: Array) -> Array:
    """dJ/dZ_L = (A_L - Y) / m   (m, k), for every output with its loss (derived above)."""
    dZ = xp.subtract(A, Y, out=out)
    dZ /= m
    return dZ
