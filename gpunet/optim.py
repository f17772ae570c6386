"""Optimizers and the learning-rate schedule, written with `xp`; their state lives on the device.

Each `step(params, grads, lr)` updates the parameter arrays in place. `lr` is a host float for this
step (from `learning_rate`), so no step reads anything back from the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpunet.backend import Backend

OPTIMIZERS = ("gd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")


class Optimizer:
    """Plain gradient descent, the seed's rule: W := W - alpha * dW."""

    slots: tuple[str, ...] = ()

    def __init__(self, backend: Backend, params: dict[str, Any]):
        self.backend = backend
        self.t = 0  # steps taken
        self.state = {f"{s}.{k}": backend.xp.zeros_like(v) for s in self.slots for k, v in params.items()}

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: float) -> None:
        self.t += 1
        for k, P in params.items():
            self.update(k, P, grads[f"d{k}"], lr)

    def update(self, k: str, P: Any, dP: Any, lr: float) -> None:
        P -= lr * dP

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the state, for checkpoints."""
        out = {k: self.backend.to_numpy(v) for k, v in self.state.items()}
        out["t"] = np.asarray(self.t)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        expected = set(self.state) | {"t"}
        if set(state) != expected:
            raise ValueError(f"optimizer state has {sorted(state)}, expected {sorted(expected)}")
        self.t = int(state["t"])
        for k in self.state:
            self.state[k][...] = self.backend.asarray(state[k])


class Momentum(Optimizer):
    """SGD with momentum: v := mu v + dW; W := W - alpha v."""

    slots = ("v",)

    def __init__(self, backend: Backend, params: dict[str, Any], momentum: float = 0.9):
        super().__init__(backend, params)
        self.mu = momentum

    def update(self, k: str, P: Any, dP: Any, lr: float) -> None:
        v = self.state[f"v.{k}"]
        v *= self.mu
        v += dP
        P -= lr * v


class Adam(Optimizer):
    """Adam: m := b1 m + (1-b1) dW; v := b2 v + (1-b2) dW^2; W := W - alpha m_hat / (sqrt(v_hat) + eps)."""

    slots = ("m", "v")

    def __init__(self, backend: Backend, params: dict[str, Any], beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(backend, params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def update(self, k: str, P: Any, dP: Any, lr: float) -> None:
        xp = self.backend.xp
        m, v = self.state[f"m.{k}"], self.state[f"v.{k}"]
        m *= self.beta1
        m += (1 - self.beta1) * dP
        v *= self.beta2
        v += (1 - self.beta2) * dP * dP
        # Bias corrections are host floats: alpha_t = alpha sqrt(1 - b2^t) / (1 - b1^t).
        lr_t = lr * math.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        eps_t = self.eps * math.sqrt(1 - self.beta2**self.t)
        P -= lr_t * m / (xp.sqrt(v) + eps_t)


def make_optimizer(name: str, backend: Backend, params: dict[str, Any], momentum: float = 0.9) -> Optimizer:
    if name == "gd":
        return Optimizer(backend, params)
    if name == "momentum":
        return Momentum(backend, params, momentum)
    if name == "adam":
        return Adam(backend, params)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate for step `step` (0-based) of `total_steps`: constant, or cosine-decayed to 0."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
