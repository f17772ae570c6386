"""Optimizers and the learning-rate schedule, written with `xp`; their state lives on the device.

Each `step(params, grads, lr)` updates the parameter arrays in place. `lr` is a host float for this
step (from `learning_rate`), so no step reads anything back from the device. A step is
`coefficients(lr, t)` (host floats: the learning rate and, for Adam, its bias corrections) then
`apply(params, grads, coefs)`; the CUDA graph of the training step passes the coefficients as 0-d device
arrays instead, so a replay reads the current values. Every update runs in place, through one scratch
array per parameter (`tmp`), and allocates nothing.

`targets(dW, db)` says where the training step's gradient products go: the step's dW and db, or, for
momentum on a backend whose GEMM accumulates in place (cuBLAS), the velocity itself, with GEMM's beta = mu
doing v := mu v + dW inside the product.

No state is left to decay into float32 subnormals (whose arithmetic runs many times slower on x86 CPUs):
the velocity of a pixel that is never lit shrinks by mu each step. Every FLUSH_EVERY steps `flush` sets the
state entries below tiny / decay^FLUSH_EVERY to zero, so none gets below tiny before the next flush. These
entries are too small to move a weight (lr times them is below the float resolution of any weight above
1e-20), and the flush is one pass every 16 steps instead of a slow pass every step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpunet.core.backend import Backend

OPTIMIZERS = ("gd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
FLUSH_EVERY = 16  # steps between flushes of tiny optimizer state


class Optimizer:
    """Plain gradient descent, the seed's rule: W := W - alpha * dW."""

    slots: tuple[str, ...] = ()
    decay = 0.0  # the smallest factor by which a state entry shrinks in one step (0: no state)

    def __init__(self, backend: Backend, params: dict[str, Any]):
        self.backend = backend
        self.t = 0  # steps taken
        self.state = {f"{s}.{k}": backend.xp.zeros_like(v) for s in self.slots for k, v in params.items()}
        self.tmp = {k: backend.xp.empty_like(v) for k, v in params.items()}  # scratch, not state

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: float) -> None:
        self.t += 1
        self.apply(params, grads, self.coefficients(lr, self.t))
        self.flush()

    def targets(self, dW: list[Any], db: list[Any]) -> tuple[list[Any], list[Any], float]:
        """(dW, db, beta) for `MLP.backward`: the arrays the gradient products go to, added with `beta`."""
        return dW, db, 0.0

    def flush(self) -> None:
        """Every FLUSH_EVERY steps, zero the state entries that could reach a subnormal before the next flush."""
        if not self.state or self.t % FLUSH_EVERY:
            return
        xp = self.backend.xp
        for k, S in self.state.items():
            tmp = self.tmp[k.split(".", 1)[1]]
            threshold = np.finfo(S.dtype).tiny / max(self.decay, 0.5) ** FLUSH_EVERY
            S *= xp.greater_equal(xp.abs(S, out=tmp), threshold, out=tmp)  # S := S [|S| >= threshold]

    def coefficients(self, lr: float, t: int) -> tuple[float, ...]:
        """The scalars of step `t` (1-based) at learning rate `lr`, as `update` takes them."""
        return (lr,)

    def apply(self, params: dict[str, Any], grads: dict[str, Any], coefs: tuple[Any, ...]) -> None:
        for k, P in params.items():
            self.update(k, P, grads[f"d{k}"], *coefs)

    def update(self, k: str, P: Any, dP: Any, lr: Any) -> None:
        self.backend.axpy(-lr, dP, P, self.tmp[k])  # P := P - lr dP

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
        self.mu = self.decay = momentum
        L = len(params) // 2
        self.v = {n: [None] + [self.state[f"v.{n}{l}"] for l in range(1, L + 1)] for n in "Wb"}

    def targets(self, dW: list[Any], db: list[Any]) -> tuple[list[Any], list[Any], float]:
        if not self.backend.gemm_accumulates:
            return super().targets(dW, db)
        return self.v["W"], self.v["b"], self.mu  # the products add into v: v := mu v + dW

    def update(self, k: str, P: Any, dP: Any, lr: Any) -> None:
        v = self.state[f"v.{k}"]
        if dP is not v:  # unless the gradient product already did v := mu v + dP
            v *= self.mu
            v += dP
        self.backend.axpy(-lr, v, P, self.tmp[k])  # P := P - lr v


class Adam(Optimizer):
    """Adam: m := b1 m + (1-b1) dW; v := b2 v + (1-b2) dW^2; W := W - alpha m_hat / (sqrt(v_hat) + eps)."""

    slots = ("m", "v")

    def __init__(self, backend: Backend, params: dict[str, Any], beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        super().__init__(backend, params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.decay = min(beta1, beta2)

    def coefficients(self, lr: float, t: int) -> tuple[float, ...]:
        # Bias corrections folded into host floats: alpha_t = alpha sqrt(1 - b2^t) / (1 - b1^t), eps_t likewise.
        lr_t = lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        eps_t = self.eps * math.sqrt(1 - self.beta2**t)
        return (lr_t, eps_t)

    def update(self, k: str, P: Any, dP: Any, lr_t: Any, eps_t: Any) -> None:
        xp, tmp = self.backend.xp, self.tmp[k]
        m, v = self.state[f"m.{k}"], self.state[f"v.{k}"]
        m *= self.beta1
        m += xp.multiply(dP, 1 - self.beta1, out=tmp)
        v *= self.beta2
        xp.multiply(dP, dP, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp
        # P -= lr_t m / (sqrt(v) + eps_t)
        xp.sqrt(v, out=tmp)
        tmp += eps_t
        xp.divide(m, tmp, out=tmp)
        tmp *= lr_t
        P -= tmp


def make_optimizer(name: str, backend: Backend, params: dict[str, Any], momentum: float = 0.9) -> Optimizer:
    if name == "gd":
        return Optimizer(backend, params)
    if name == "momentum":
        return Momentum(backend, params, momentum)
    if name == "adam":
        return Adam(backend, params)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


OPTIMIZER_SLOTS = {"gd": Optimizer.slots, "momentum": Momentum.slots, "adam": Adam.slots}  # state per parameter


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate for step `step` (0-based) of `total_steps`: constant, or cosine-decayed to 0."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
