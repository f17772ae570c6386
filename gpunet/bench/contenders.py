"""The contenders of `gpunet bench` that need no PyTorch: gpunet's own step and the plain NumPy (CuPy) one."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpunet.core import reference
from gpunet.core.backend import Backend
from gpunet.core.model import MLP, gemm_flops  # gemm_flops: the bench modules import it from here
from gpunet.core.optim import make_optimizer
from gpunet.core.step import TrainStep, batches
from gpunet.core.threads import blas_threads

LR, MOMENTUM = 0.1, 0.9


def load_data(backend: Backend, limit: int) -> Any:
    from gpunet.data.load import DeviceData, load_mnist

    return DeviceData(backend, load_mnist()[0], limit)


class Gpunet:
    """gpunet's own training step, on the BLAS threads `threads` asks for ('auto' or a count), chosen as
    `gpunet train` chooses them over all of the runner's epochs."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool,
                 threads: int | str = "auto"):
        self.backend, self.data, self.B = backend, data, B
        self.net = MLP.from_state_dict(backend, init)
        self.opt = make_optimizer("gd" if B == data.m else "momentum", backend, self.net.params, MOMENTUM)
        self.step = TrainStep(self.net, self.opt, data.X, data.Y, data.y, graph=graph)
        self.blas = blas_threads(threads, backend, B, self.net.sizes)

    def epoch(self, e: int) -> tuple[float, float]:
        m = self.data.m
        loss_sum, correct = self.step.zero_sums()
        with self.blas:
            for _, idx in self.step.batches(self.B, (0, e)):
                with self.blas.step():
                    self.step(idx, LR)
        loss, acc = self.backend.to_floats([loss_sum / m, correct / m])
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()


class Plain:
    """The textbook form, `gpunet.core.reference`: a new array for every result, reductions for the sums."""

    def __init__(self, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool):
        self.backend, self.data, self.B = backend, data, B
        L = len(init) // 2
        self.W = [None] + [backend.asarray(np.array(init[f"W{l}"])) for l in range(1, L + 1)]  # copies: `init`
        self.b = [None] + [backend.asarray(np.array(init[f"b{l}"])) for l in range(1, L + 1)]  # is shared
        self.vW = [None] + [backend.xp.zeros_like(W) for W in self.W[1:]]
        self.vb = [None] + [backend.xp.zeros_like(b) for b in self.b[1:]]
        self.mu = 0.0 if B == data.m else MOMENTUM

    @property
    def p(self) -> dict[str, Any]:
        return {f"{n}{l}": P[l] for l in range(1, len(self.W)) for n, P in (("W", self.W), ("b", self.b))}

    def epoch(self, e: int) -> tuple[float, float]:
        xp, d, B = self.backend.xp, self.data, self.B
        loss_sum, correct = xp.zeros((), d.X.dtype), xp.zeros((), xp.int64)
        for _, idx in batches(self.backend, d.m, B, (0, e)):
            X, Y, y = (d.X, d.Y, d.y) if idx is None else (d.X[idx], d.Y[idx], d.y[idx])
            Z, A = reference.forward(xp, self.W, self.b, X)
            loss_sum += reference.loss(xp, A[-1], Y) * X.shape[0]
            correct += (A[-1].argmax(axis=1) == y).sum()
            dW, db = reference.backward(self.W, Z, A, Y)
            reference.momentum_step(self.W, self.vW, dW, LR, self.mu)
            reference.momentum_step(self.b, self.vb, db, LR, self.mu)
        loss, acc = self.backend.to_floats([loss_sum / d.m, correct / d.m])
        return loss, acc

    def peak_device_bytes(self) -> int:
        return self.backend.xp.get_default_memory_pool().total_bytes()
