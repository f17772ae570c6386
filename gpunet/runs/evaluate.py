"""Evaluation, written once: loss, accuracy, confusion counts and probabilities of a net on a split.

`evaluate` runs the forward pass and the counts on the device and reads nothing back; the training loop
reads its loss and accuracy once per epoch, `evaluate_model` reads the loss and the counts once and turns
them into per-class precision, recall and F1 on the host (arithmetic on the small (k, k) matrix).
`probabilities` is the host-in, host-out forward pass of predict, serve and the plots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gpunet.errors import GpunetError
from gpunet.core.model import MLP

if TYPE_CHECKING:  # a type only: importing gpunet.data.load would load the download code into predict and serve
    from gpunet.data.load import DeviceData

Array = Any  # numpy.ndarray or cupy.ndarray


@dataclass
class Scores:
    """A net's results on one split, as device arrays (nothing read back to the host yet)."""

    loss: Array  # 0-d, mean cross-entropy
    confusion: Array  # (k, k) int64 counts, rows the true class, columns the predicted one
    probs: Array | None = None  # (n, k) class probabilities, when asked for

    @property
    def accuracy(self) -> Array:
        """0-d: the fraction of samples on the diagonal."""
        return self.confusion.trace() / self.confusion.sum()


def evaluate(net: MLP, data: DeviceData, probabilities: bool = False) -> Scores:
    """Forward `data` (already on the net's device) through `net`; no sync."""
    xp = net.backend.xp
    AL = net.predict_proba(data.X)  # (n, k)
    k = AL.shape[1]
    # Each sample's cell (true, predicted) as one code, counted by comparison: bincount would read the device
    # (CuPy's looks at the largest code to size its output), this reads nothing. (n, k*k) booleans.
    codes = data.y.astype(xp.int64) * k + AL.argmax(axis=1)  # (n,)
    counts = xp.equal(codes[:, None], xp.arange(k * k)).sum(axis=0).reshape(k, k)
    return Scores(net.loss(AL, data.Y), counts, AL if probabilities else None)


def probabilities(net: MLP, X: np.ndarray) -> np.ndarray:
    """Host features (n, d) -> host class probabilities (n, k): one copy in, one read back."""
    return net.backend.to_numpy(net.predict_proba(net.backend.asarray(X)))


@dataclass
class Evaluation:
    dataset: str
    classes: list[str]
    loss: float
    confusion: np.ndarray  # (k, k) int64, rows true class, columns predicted

    @property
    def samples(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.samples)

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 (0 where undefined: no predictions or no samples) and support of each class."""
        cm = self.confusion
        hits, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
        precision = np.divide(hits, predicted, out=np.zeros(len(cm)), where=predicted > 0)
        recall = np.divide(hits, support, out=np.zeros(len(cm)), where=support > 0)
        total = precision + recall
        f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(cm)), where=total > 0)
        return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(self.classes, precision, recall, f1, support)]

    def as_dict(self) -> dict[str, Any]:
        rows = self.per_class()
        macro = {key: float(np.mean([r[key] for r in rows])) for key in ("precision", "recall", "f1")}
        return {"dataset": self.dataset, "samples": self.samples, "loss": self.loss, "accuracy": self.accuracy,
                "per_class": rows, "macro_average": macro, "confusion": self.confusion.tolist()}

    def table(self) -> str:
        """The report as aligned text: summary, per-class table, confusion matrix."""
        d = self.as_dict()
        width = max(len("macro avg"), *(len(n) for n in self.classes))
        lines = [f"{d['dataset']} test set, {d['samples']} samples: loss {d['loss']:.4f}, "
                 f"accuracy {100 * d['accuracy']:.2f}%", "",
                 f"{'class':<{width}}  precision  recall      f1  support"]
        for r in [*d["per_class"], {"class": "macro avg", **d["macro_average"], "support": d["samples"]}]:
            lines.append(f"{r['class']:<{width}}  {100 * r['precision']:8.2f}%  {100 * r['recall']:5.2f}%  "
                         f"{100 * r['f1']:5.2f}%  {r['support']:7d}")
        cw = max(5, len(str(self.confusion.max())) + 1)
        names = [n if n == str(i) else f"{i} {n}" for i, n in enumerate(self.classes)]
        label = max(map(len, names)) + 1
        lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
                  " " * label + "".join(f"{j:>{cw}}" for j in range(len(self.classes)))]
        for name, row in zip(names, self.confusion):
            lines.append(f"{name:<{label}}" + "".join(f"{c:>{cw}}" for c in row))
        return "\n".join(lines)


def evaluate_model(net: MLP, data: DeviceData, dataset: str, classes: list[str]) -> Evaluation:
    """The report of `net` on `data` (already on the net's device), with a single device -> host read."""
    xp = net.backend.xp
    if data.X.shape[1] != net.sizes[0] or net.sizes[-1] != len(classes):
        raise GpunetError(f"the model maps {net.sizes[0]} inputs to {net.sizes[-1]} classes, but {dataset} has "
                          f"{data.X.shape[1]} inputs and {len(classes)} classes")
    scores = evaluate(net, data)
    k = len(classes)
    host = net.backend.to_numpy(xp.concatenate([scores.loss.reshape(1).astype(xp.float64),
                                                scores.confusion.ravel().astype(xp.float64)]))
    return Evaluation(dataset, classes, float(host[0]), host[1:].reshape(k, k).astype(np.int64))
