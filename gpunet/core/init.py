"""Initial weights, drawn on the host with NumPy so every backend starts from the same numbers.

Each returns a state dict {W1, b1, ..., WL, bL} of float64 arrays for the layer widths `sizes`
(n_0, ..., n_L), W_l of shape (n_{l-1}, n_l) and b_l of shape (n_l,).
"""

from __future__ import annotations

import numpy as np


def he_normal(sizes: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He: W_l ~ N(0, 2 / n_{l-1}), b_l = 0 (gpunet's default, suited to ReLU), drawn layer by layer."""
    state = {}
    for l in range(1, len(sizes)):
        fan_in, fan_out = sizes[l - 1], sizes[l]
        state[f"W{l}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        state[f"b{l}"] = np.zeros(fan_out)
    return state


def glorot_uniform(sizes: tuple[int, ...], rng: np.random.RandomState, factor: float = 6.0) -> dict[str, np.ndarray]:
    """Glorot as scikit-learn's MLP draws it: W_l then b_l ~ U(-r, r), r = sqrt(factor / (n_{l-1} + n_l)), layer by
    layer from `rng` (factor 6, or 2 for a logistic activation), so the same RandomState gives its weights."""
    state = {}
    for l in range(1, len(sizes)):
        fan_in, fan_out = sizes[l - 1], sizes[l]
        bound = np.sqrt(factor / (fan_in + fan_out))
        state[f"W{l}"] = rng.uniform(-bound, bound, (fan_in, fan_out))
        state[f"b{l}"] = rng.uniform(-bound, bound, fan_out)
    return state
