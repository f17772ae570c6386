"""Optimizers and the learning-rate schedule, written with `xp`; their state lives on the device.

Each `step(params, grads, lr)` updates the parameter arrays in place. `lr` is a host float for this
step (from `learning_rate`), so no step reads anything back from the device. A step (`advance`) counts
itself, takes `coefficients(lr, t)` (host floats: the learning rate and, for Adam, its bias corrections) and
runs `apply(params, grads, coefs)` (or the training step that ends with it); the CUDA graph of the training
step passes the coefficients as 0-d device arrays instead, so a replay reads the current values. Every update
runs in place, through one scratch array per parameter (`tmp`), and allocates nothing.

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
from typing import Any, Callable

import numpy as np

from gpunet.core.backend import Backend

OPTIMIZERS = ("gd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
FLUSH_EVERY = 16  # steps between flushes of tiny optimizer state


class Optimizer:
    """What every optimizer shares: the step count `t`, the state `state[slot][name]` (e.g. `state["v"]["W1"]`,
    one array per slot and parameter, on the device), one scratch array per parameter, the flush of tiny state
    and host copies for checkpoints. Subclasses give `update` (and `coefficients`)."""

    slots: tuple[str, ...] = ()
    decay = 0.0  # the smallest factor by which a state entry shrinks in one step (0: no state)

    def __init__(self, backend: Backend, params: dict[str, Any]):
        self.backend = backend
        self.t = 0  # steps taken
        self.state = {s: {k: backend.xp.zeros_like(v) for k, v in params.items()} for s in self.slots}
        self.tmp = {k: backend.xp.empty_like(v) for k, v in params.items()}  # scratch, not state

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: float) -> None:
        """One update of `params` by `grads` at the learning rate `lr`."""
        self.advance(lr, self.apply, params, grads)

    def advance(self, lr: float, run: Callable[..., None], *args: Any) -> None:
        """Count a step, let `run(*args, coefficients)` do its device work (the update, or the training step
        that ends with it), then flush tiny state."""
        self.t += 1
        run(*args, self.coefficients(lr, self.t))
        self.flush()

    def targets(self, dW: list[Any], db: list[Any]) -> tuple[list[Any], list[Any], float]:
        """(dW, db, beta) for `MLP.backward`: the arrays the gradient products go to, added with `beta`."""
        return dW, db, 0.0

    def flush(self) -> None:
        """Every FLUSH_EVERY steps, zero the state entries that could reach a subnormal before the next flush."""
        if not self.state or self.t % FLUSH_EVERY:
            return
        xp = self.backend.xp
        for arrays in self.state.values():
            for k, S in arrays.items():
                tmp = self.tmp[k]
                threshold = np.finfo(S.dtype).tiny / max(self.decay, 0.5) ** FLUSH_EVERY
                S *= xp.greater_equal(xp.abs(S, out=tmp), threshold, out=tmp)  # S := S [|S| >= threshold]

    def coefficients(self, lr: float, t: int) -> tuple[float, ...]:
        """The scalars of step `t` (1-based) at learning rate `lr`, as `update` takes them."""
        return (lr,)

    def apply(self, params: dict[str, Any], grads: dict[str, Any], coefs: tuple[Any, ...]) -> None:
        for k, P in params.items():
            self.update(k, P, grads[f"d{k}"], *coefs)

    def update(self, k: str, P: Any, dP: Any, *coefs: Any) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of the state for checkpoints, named "slot.param" (e.g. "v.W1"), and the step count "t"."""
        out = {f"{s}.{k}": self.backend.to_numpy(v) for s, arrays in self.state.items() for k, v in arrays.items()}
        out["t"] = np.asarray(self.t)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load what `state_dict` wrote; ValueError unless it has exactly this optimizer's entries."""
        names = {f"{s}.{k}": S for s, arrays in self.state.items() for k, S in arrays.items()}
        if set(state) != set(names) | {"t"}:
            raise ValueError(f"optimizer state has {sorted(state)}, expected {sorted(set(names) | {'t'})}")
        self.t = int(state["t"])
        for name, S in names.items():
            S[...] = self.backend.asarray(state[name])


class GradientDescent(Optimizer):
    """Plain gradient descent, the seed's rule: W := W - lr dW."""

    def update(self, k: str, P: Any, dP: Any, lr: Any) -> None:
        self.backend.axpy(-lr, dP, P, self.tmp[k])  # P := P - lr dP


class Momentum(Optimizer):
    """SGD with momentum: v := mu v + dW; W := W - lr v."""

    slots = ("v",)

    def __init__(self, backend: Backend, params: dict[str, Any], momentum: float = 0.9):
        super().__init__(backend, params)
        self.mu = self.decay = momentum
        v, L = self.state["v"], len(params) // 2
        self.vW = [None] + [v[f"W{l}"] for l in range(1, L + 1)]  # by layer, as `targets` hands them to backward
        self.vb = [None] + [v[f"b{l}"] for l in range(1, L + 1)]

    def targets(self, dW: list[Any], db: list[Any]) -> tuple[list[Any], list[Any], float]:
        if not self.backend.gemm_accumulates:
            return super().targets(dW, db)
        return self.vW, self.vb, self.mu  # the products add into v: v := mu v + dW

    def update(self, k: str, P: Any, dP: Any, lr: Any) -> None:
        v = self.state["v"][k]
        if dP is not v:  # unless the gradient product already did v := mu v + dP
            v *= self.mu
            v += dP
        self.backend.axpy(-lr, v, P, self.tmp[k])  # P := P - lr v


class SGD(Optimizer):
    """scikit-learn's SGD, the velocity holding the step: v := mu v - lr dW; W := W + v, or with Nesterov's
    momentum W := W + mu v - lr dW (the new v). With a constant rate this is `Momentum` (v = -lr v'); with a
    changing one the velocity keeps the rates it was made with, as scikit-learn's does."""

    slots = ("v",)

    def __init__(self, backend: Backend, params: dict[str, Any], momentum: float = 0.9, nesterov: bool = True):
        super().__init__(backend, params)
        self.mu = self.decay = momentum
        self.nesterov = nesterov
        self.tmp2 = {k: backend.xp.empty_like(v) for k, v in params.items()} if nesterov else {}

    def update(self, k: str, P: Any, dP: Any, lr: Any) -> None:
        xp, v, step = self.backend.xp, self.state["v"][k], self.tmp[k]
        xp.multiply(dP, lr, out=step)  # lr dW
        v *= self.mu
        v -= step                      # v := mu v - lr dW
        if not self.nesterov:
            P += v                     # W := W + v
            return
        step -= xp.multiply(v, self.mu, out=self.tmp2[k])  # lr dW - mu v
        P -= step                      # W := W + (mu v - lr dW)


class Adam(Optimizer):
    """Adam: m := b1 m + (1-b1) dW; v := b2 v + (1-b2) dW^2; W := W - lr m_hat / (sqrt(v_hat) + eps), the hats
    the bias corrections m / (1 - b1^t), v / (1 - b2^t). With `correct_eps=False`, scikit-learn's form:
    W := W - lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) (eps not scaled with the rate)."""

    slots = ("m", "v")

    def __init__(self, backend: Backend, params: dict[str, Any], beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, correct_eps: bool = True):
        super().__init__(backend, params)
        self.beta1, self.beta2, self.eps, self.correct_eps = beta1, beta2, eps, correct_eps
        self.decay = min(beta1, beta2)

    def coefficients(self, lr: float, t: int) -> tuple[float, ...]:
        # Bias corrections folded into host floats: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), eps_t likewise.
        lr_t = lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        eps_t = self.eps * math.sqrt(1 - self.beta2**t) if self.correct_eps else self.eps
        return (lr_t, eps_t)

    def update(self, k: str, P: Any, dP: Any, lr_t: Any, eps_t: Any) -> None:
        xp, tmp = self.backend.xp, self.tmp[k]
        m, v = self.state["m"][k], self.state["v"][k]
        m *= self.beta1
        m += xp.multiply(dP, 1 - self.beta1, out=tmp)  # m := b1 m + (1 - b1) dW
        v *= self.beta2
        xp.multiply(dP, dP, out=tmp)
        tmp *= 1 - self.beta2
        v += tmp                                        # v := b2 v + (1 - b2) dW^2
        xp.sqrt(v, out=tmp)
        tmp += eps_t
        xp.divide(m, tmp, out=tmp)
        tmp *= lr_t
        P -= tmp                                        # W := W - lr_t m / (sqrt(v) + eps_t)


def make_optimizer(name: str, backend: Backend, params: dict[str, Any], momentum: float = 0.9) -> Optimizer:
    if name == "gd":
        return GradientDescent(backend, params)
    if name == "momentum":
        return Momentum(backend, params, momentum)
    if name == "adam":
        return Adam(backend, params)
    raise ValueError(f"unknown optimizer {name!r}: use one of {', '.join(OPTIMIZERS)}")


OPTIMIZER_SLOTS = {"gd": GradientDescent.slots, "momentum": Momentum.slots, "adam": Adam.slots}  # state per parameter


def learning_rate(base: float, schedule: str, step: int, total_steps: int) -> float:
    """The learning rate for step `step` (0-based) of `total_steps`: constant, or cosine-decayed to 0."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return 0.5 * base * (1 + math.cos(math.pi * step / total_steps))
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
