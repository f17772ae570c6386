r"""The textbook MLP: the equations of `gpunet.core.model`'s docstring in plain array code, for any depth.

Every result is a new array and every sum a reduction; W[l], b[l], Z[l], A[l] and the gradients are lists
indexed by the layer l = 1..L (index 0 holds None, or X for A). It is the oracle the tests hold `MLP` to,
and the bench's plain NumPy (CuPy) contender. `xp` is numpy or cupy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def forward(xp: Any, W: list[Array], b: list[Array], X: Array) -> tuple[list[Array], list[Array]]:
    """(Z, A) of every layer, A[0] = X and A[L] the softmax probabilities."""
    L = len(W) - 1
    Z, A = [None], [X]
    for l in range(1, L + 1):
        Z.append(A[l - 1] @ W[l] + b[l])  # (m, n_l)
        if l < L:
            A.append(xp.maximum(Z[l], 0))  # ReLU
        else:
            E = xp.exp(Z[l] - Z[l].max(axis=1, keepdims=True))
            A.append(E / E.sum(axis=1, keepdims=True))  # softmax
    return Z, A


def loss(xp: Any, AL: Array, Y: Array) -> Array:
    """J = -(1/m) sum_i sum_k Y_ik log A_ik, with probabilities clipped to the dtype's tiny."""
    return -(Y * xp.log(xp.maximum(AL, np.finfo(AL.dtype).tiny))).sum() / Y.shape[0]


def backward(W: list[Array], Z: list[Array], A: list[Array], Y: Array) -> tuple[list[Array], list[Array]]:
    """(dW, db) of the mean cross-entropy, Y one-hot."""
    L, m = len(W) - 1, Y.shape[0]
    dW, db = [None] * (L + 1), [None] * (L + 1)
    dZ = (A[L] - Y) / m  # (m, 10)
    for l in range(L, 0, -1):
        dW[l] = A[l - 1].T @ dZ  # (n_{l-1}, n_l)
        db[l] = dZ.sum(axis=0)  # (n_l,)
        if l > 1:
            dZ = (dZ @ W[l].T) * (Z[l - 1] > 0)  # (m, n_{l-1})
    return dW, db


def momentum_step(P: list[Array], v: list[Array], dP: list[Array], lr: float, mu: float) -> None:
    """v := mu v + dP; P := P - lr v, layer by layer, in place (mu = 0: plain gradient descent)."""
    for l in range(1, len(P)):
        v[l] = mu * v[l] + dP[l]
        P[l] -= lr * v[l]
