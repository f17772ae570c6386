"""The validation split: rows of the training set held out to choose recipes and epochs, never trained on.

The draw is stratified (each class keeps its share of the rows, to within one row) and seeded by a fixed
constant, on the host with NumPy: the same rows on every device, for every run seed and every `limit`, so all
runs of a sweep are judged on the same rows. It is taken from the whole training set; `limit` then keeps the
first N of the remaining rows, in their original order. The SHA-256 of the held-out indices names the rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from gpunet.data.datasets import Split
from gpunet.errors import GpunetError

VALIDATION_SEED = 13  # fixed: the held-out rows depend on the dataset and val_size only


@dataclass
class Holdout:
    train: Split  # the training rows left, in their original order
    val: Split  # the held-out rows, in their original order
    indices: np.ndarray  # (val_size,) int64, sorted: the held-out rows of the original training set

    @property
    def digest(self) -> str:
        """SHA-256 of the held-out indices as little-endian int64."""
        return hashlib.sha256(self.indices.astype("<i8").tobytes()).hexdigest()

    def describe(self) -> dict[str, object]:
        return {"samples": len(self.indices), "seed": VALIDATION_SEED, "stratified": True,
                "indices_sha256": self.digest}


def class_quota(labels: np.ndarray, size: int) -> np.ndarray:
    """Rows to draw from each class (k,): proportional to its count, rounded by largest remainder to sum to
    `size`."""
    counts = np.bincount(labels)
    exact = counts * size / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(-(exact - quota), kind="stable")[:size - quota.sum()]] += 1
    return quota


def hold_out(split: Split, size: int) -> Holdout:
    """Hold out `size` rows of `split`, stratified by class (0 < size < rows; GpunetError otherwise)."""
    n = len(split.labels)
    if not 0 < size < n:
        raise GpunetError(f"val_size = {size}: the validation split must be between 1 and {n - 1} of the "
                          f"{n} training samples; give --val-size N (0 turns it off)")
    rng = np.random.default_rng(VALIDATION_SEED)
    labels = split.labels.astype(np.int64)
    picked = [rng.choice(np.flatnonzero(labels == c), q, replace=False)
              for c, q in enumerate(class_quota(labels, size))]
    indices = np.sort(np.concatenate(picked))
    keep = np.ones(n, bool)
    keep[indices] = False
    return Holdout(Split(split.images[keep], split.labels[keep]), Split(split.images[indices], split.labels[indices]),
                   indices)
