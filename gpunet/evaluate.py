"""Test-set evaluation: loss, accuracy, per-class precision, recall and F1, and the confusion matrix.

The forward pass and the confusion counts stay on the device; one host read brings back the loss and
the counts, and everything else is arithmetic on the small (k, k) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpunet.errors import GpunetError
from gpunet.model import MLP
from gpunet.train import DeviceData


def confusion_matrix(xp: Any, y: Any, pred: Any, k: int) -> Any:
    """(k, k) counts, rows the true class, columns the predicted one, with `xp` on the arrays' device."""
    return xp.bincount(y.astype(xp.int64) * k + pred, minlength=k * k).reshape(k, k)


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
    """Evaluate `net` on `data` (already on the net's device) with a single device -> host read."""
    xp = net.backend.xp
    if data.X.shape[1] != net.sizes[0] or net.sizes[-1] != len(classes):
        raise GpunetError(f"the model maps {net.sizes[0]} inputs to {net.sizes[-1]} classes, but {dataset} has "
                          f"{data.X.shape[1]} inputs and {len(classes)} classes")
    AL = net.predict_proba(data.X)  # (n, k)
    k = len(classes)
    counts = confusion_matrix(xp, data.y, AL.argmax(axis=1), k)  # (k, k)
    host = net.backend.to_numpy(xp.concatenate([net.loss(AL, data.Y).reshape(1).astype(xp.float64),
                                                counts.ravel().astype(xp.float64)]))
    return Evaluation(dataset, classes, float(host[0]), host[1:].reshape(k, k).astype(np.int64))
