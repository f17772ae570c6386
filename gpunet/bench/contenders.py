"""The contenders of `gpunet bench` that need no PyTorch: gpunet's own step and the plain NumPy (CuPy) one."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpunet.backend import Backend
from gpunet.model import MLP
from gpunet.optim import make_optimizer
from gpunet.step import TrainStep

LR, MOMENTUM = 0.1, 0.9


def load_data(backend: Backend, limit: int) -> Any:
    from gpunet.data import load_mnist
    from gpunet.train import DeviceData

    return DeviceData(backend, load_mnist()[0], limit)


def gemm_flops(m: int, sizes: tuple[int, ...]) -> float:
    """FLOPs of one training pass over m samples: forward, dW and dA products, no gradient w.r.t. the input."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    return 2.0 * m * (2 * sum(a * b for a, b in pairs) + sum(a * b for a, b in pairs[1:]))


class Gpunet:
    """gpunet's own training step."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool):
        self.backend, self.data, self.B = backend, data, B
        self.net = MLP.from_state_dict(backend, init)
        self.opt = make_optimizer("gd" if B == data.m else "momentum", backend, self.net.params, MOMENTUM)
        self.step = TrainStep(self.net, self.opt, data.X, data.Y, data.y, graph=graph)

    def epoch(self, e: int) -> tuple[float, float]:
        m, B = self.data.m, self.B
        steps = math.ceil(m / B)
        perm = None if steps == 1 else self.backend.permutation(m, (0, e))
        loss_sum, correct = self.step.zero_sums()
        for s in range(steps):
            self.step(None if perm is None else perm[s * B:(s + 1) * B], LR)
        loss, acc = self.backend.to_numpy(self.backend.xp.stack([loss_sum / m, correct / m])).tolist()
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()


class Plain:
    """The reference: the same equations in plain array code, a new array for every result."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool):
        self.backend, self.data, self.B = backend, data, B
        self.p = {k: backend.asarray(np.array(v)) for k, v in init.items()}  # a copy: `init` is shared
        self.v = {k: backend.xp.zeros_like(v) for k, v in self.p.items()}
        self.mu = 0.0 if B == data.m else MOMENTUM

    def epoch(self, e: int) -> tuple[float, float]:
        xp, d, B, p = self.backend.xp, self.data, self.B, self.p
        steps = math.ceil(d.m / B)
        perm = None if steps == 1 else self.backend.permutation(d.m, (0, e))
        loss_sum, correct = xp.zeros((), d.X.dtype), xp.zeros((), xp.int64)
        tiny = np.finfo(d.X.dtype).tiny
        for s in range(steps):
            if perm is None:
                X, Y, y = d.X, d.Y, d.y
            else:
                idx = perm[s * B:(s + 1) * B]
                X, Y, y = d.X[idx], d.Y[idx], d.y[idx]
            m = X.shape[0]
            Z1 = X @ p["W1"] + p["b1"]
            A1 = xp.maximum(Z1, 0)
            Z2 = A1 @ p["W2"] + p["b2"]
            E = xp.exp(Z2 - Z2.max(axis=1, keepdims=True))
            A2 = E / E.sum(axis=1, keepdims=True)
            loss_sum += -(Y * xp.log(xp.maximum(A2, tiny))).sum()
            correct += (A2.argmax(axis=1) == y).sum()
            dZ2 = (A2 - Y) / m
            dZ1 = (dZ2 @ p["W2"].T) * (Z1 > 0)
            grads = {"W2": A1.T @ dZ2, "b2": dZ2.sum(axis=0), "W1": X.T @ dZ1, "b1": dZ1.sum(axis=0)}
            for k, dP in grads.items():
                self.v[k] = self.mu * self.v[k] + dP
                p[k] -= LR * self.v[k]
        loss, acc = self.backend.to_numpy(xp.stack([loss_sum / d.m, correct / d.m])).tolist()
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()
