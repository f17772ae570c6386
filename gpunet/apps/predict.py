"""Predict the digit in image files: each is made MNIST-like by `preprocess.to_mnist`, then classified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.errors import GpunetError, printable
from gpunet.runs.evaluate import probabilities
from gpunet.core.model import MLP
from gpunet.apps.preprocess import file_input


@dataclass
class Result:
    path: str
    image: np.ndarray | None = None  # (28, 28) float32, the input the net saw
    probs: np.ndarray | None = None  # (k,) class probabilities
    error: str | None = None  # one line saying why this file could not be read

    def as_dict(self, classes: list[str]) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = int(self.probs.argmax())
        return {"path": self.path, "prediction": classes[top], "class_index": top,
                "probabilities": {c: float(p) for c, p in zip(classes, self.probs)}}

    def line(self, classes: list[str], top: int = 3) -> str:
        """One line for a terminal: names from the model file and the file name shown printable and bounded."""
        if self.error is not None:
            return f"error: {printable(self.error, 1000)}"
        best = np.argsort(-self.probs, kind="stable")[:top]
        return f"{printable(self.path, 1000)}: " + ", ".join(f"{printable(classes[c])} ({100 * self.probs[c]:.1f}%)"
                                                              for c in best)


def predict_files(net: MLP, paths: list[Path]) -> list[Result]:
    """One Result per path; a file that cannot be read gets its error and the others still run."""
    results = []
    for path in paths:
        try:
            results.append(Result(str(path), image=file_input(path)))
        except GpunetError as e:  # file_input turns every failure into one line naming the path
            results.append(Result(str(path), error=str(e)))
    good = [r for r in results if r.error is None]
    if good:
        X = np.stack([r.image.reshape(-1) for r in good])  # (n, 784)
        for r, p in zip(good, probabilities(net, X)):  # (n, k)
            r.probs = p.astype(np.float64)
    return results
