"""Every line of PyTorch in `gpunet bench`; imported only when PyTorch is asked for and installed."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from gpunet.core.backend import Backend
from gpunet.bench.contenders import LR, MOMENTUM
from gpunet.runs.config import Config, batch_rows
from gpunet.data.datasets import NUM_CLASSES, Split
from gpunet.core.model import MLP
from gpunet.core.optim import learning_rate


class Torch:
    """PyTorch eager, the lean loop a skilled user writes: nn.Sequential(Linear, ReLU, Linear), F.cross_entropy,
    torch.optim; each epoch one `index_select` of the training tensors by `randperm` into preallocated tensors,
    then contiguous slices; no DataLoader. Each step adds its loss to a device sum (no accuracy: that costs a
    pass the lean loop skips). The optimizer is the bench's (momentum SGD, plain GD for the full batch) unless
    `optimizer` names one. `TorchGather` is the slower loop the bench used before."""

    gather = False  # True: a gather per batch, loss and accuracy summed every step

    def __init__(self, backend: Backend, X: np.ndarray, y: np.ndarray, B: int, init: dict[str, np.ndarray],
                 optimizer: str | None = None, momentum: float = MOMENTUM):
        """Training features X (n, 784) and labels y (n,) on the host, moved to `backend`'s device once."""
        self.torch, self.B, self.m = torch, B, len(y)
        self.dev = torch.device(backend.name)  # gpunet's device names are PyTorch's
        self.dtype = getattr(torch, np.dtype(backend.dtype).name)
        self.X, self.y = self.tensors(X, y)
        self.Xs, self.ys = torch.empty_like(self.X), torch.empty_like(self.y)  # the shuffled epoch
        L = len(init) // 2
        layers: list[Any] = []
        for l in range(1, L + 1):
            layers += [torch.nn.Linear(*init[f"W{l}"].shape), torch.nn.ReLU()]
        self.model = torch.nn.Sequential(*layers[:-1]).to(self.dev, self.dtype)  # no ReLU after the last layer
        with torch.no_grad():
            for l in range(1, L + 1):
                layer = self.model[2 * (l - 1)]
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(init[f"W{l}"].T)))
                layer.bias.copy_(torch.from_numpy(init[f"b{l}"]))
        optimizer = optimizer or ("gd" if B == self.m else "momentum")
        params = self.model.parameters()
        if optimizer == "adam":  # the same update as gpunet.core.optim.Adam (betas 0.9, 0.999; eps 1e-8)
            self.opt = torch.optim.Adam(params, lr=LR, betas=(0.9, 0.999), eps=1e-8)
        else:
            self.opt = torch.optim.SGD(params, lr=LR, momentum=momentum if optimizer == "momentum" else 0.0)
        self.gen = torch.Generator(device=self.dev)

    @classmethod
    def on(cls, backend: Backend, data: Any, B: int, init: dict[str, np.ndarray], graph: bool = False) -> "Torch":
        """The epoch bench's runner, over gpunet's device-resident `data` (copied to the host once, untimed)."""
        return cls(backend, backend.to_numpy(data.X), backend.to_numpy(data.y), B, init)

    def tensors(self, X: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        """Host features X (n, 784) and labels y (n,) as tensors: on the CPU sharing X's memory (when it has the
        net's dtype); on a GPU copied once."""
        X = self.torch.from_numpy(X).to(self.dev, self.dtype)
        return X, self.torch.from_numpy(y.astype(np.int64)).to(self.dev)

    def epoch(self, e: int, lr: float | list[float] = LR, test: tuple[Any, Any] | None = None) -> list[float]:
        """One epoch (shuffle seeded with `e`) at `lr`, or lr[s] for step s. Returns the train loss and accuracy,
        then the test loss and accuracy on `test` = (X, y) when given: one read from the device."""
        torch, B, m = self.torch, self.B, self.m
        F = torch.nn.functional
        steps = math.ceil(m / B)
        lrs = lr if isinstance(lr, list) else [lr] * steps
        self.gen.manual_seed(e)
        perm = None if steps == 1 else torch.randperm(m, device=self.dev, generator=self.gen)
        loss_sum = torch.zeros((), dtype=self.dtype, device=self.dev)
        correct = torch.zeros((), dtype=torch.int64, device=self.dev)
        if perm is not None and not self.gather:
            torch.index_select(self.X, 0, perm, out=self.Xs)
            torch.index_select(self.y, 0, perm, out=self.ys)
        for s in range(steps):
            if perm is None:
                X, y = self.X, self.y
            elif self.gather:
                idx = perm[s * B:(s + 1) * B]
                X, y = self.X[idx], self.y[idx]
            else:
                X, y = self.Xs[s * B:(s + 1) * B], self.ys[s * B:(s + 1) * B]
            for group in self.opt.param_groups:
                group["lr"] = lrs[s]
            logits = self.model(X)
            loss = F.cross_entropy(logits, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum.add_(loss.detach(), alpha=y.shape[0])
            if self.gather:
                with torch.no_grad():
                    correct += (logits.argmax(dim=1) == y).sum()
        sums = [loss_sum / m, correct / m]
        if test is not None:
            with torch.no_grad():
                logits = self.model(test[0])
                sums += [F.cross_entropy(logits, test[1]), (logits.argmax(dim=1) == test[1]).double().mean()]
        return torch.stack([t.double() for t in sums]).tolist()

    def peak_device_bytes(self) -> int:
        return self.torch.cuda.max_memory_reserved()


class TorchGather(Torch):
    """The bench's earlier PyTorch loop: a gather `X[idx]` per batch, loss and accuracy summed every step."""

    gather = True


def torch_run(cfg: Config, backend: Backend, train_split: Split, test_split: Split) -> dict[str, float]:
    """The recipe of `cfg` in PyTorch, as `train` runs it: the same initial weights and network, the optimizer,
    the per-step learning rate of `gpunet.core.optim.learning_rate`, the batch size, a fresh shuffle each epoch
    (torch.randperm, seeded from the config's seed and the epoch), train sums on the device read once per epoch,
    and the test set evaluated once, after the last epoch. The features go from the host straight to PyTorch's
    device, with no stop in gpunet's."""
    from gpunet.data.load import to_features

    X, y = to_features(train_split.images[:cfg.limit or None]), train_split.labels[:cfg.limit or None]
    init = MLP(backend, (X.shape[1], *cfg.hidden, NUM_CLASSES), seed=cfg.seed).state_dict()
    m = len(y)
    B = batch_rows(cfg.batch_size, m)
    runner = Torch(backend, X, y, B, init, optimizer=cfg.optimizer, momentum=cfg.momentum)
    test = runner.tensors(to_features(test_split.images), test_split.labels)
    steps = math.ceil(m / B)
    seconds = 0.0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        lrs = [learning_rate(cfg.lr, cfg.schedule, (epoch - 1) * steps + s, cfg.epochs * steps)
               for s in range(steps)]
        stats = runner.epoch(cfg.seed * 1_000_000 + epoch, lrs, test if epoch == cfg.epochs else None)
        seconds += time.perf_counter() - t0
    return {"test_accuracy": stats[3], "epoch_seconds": seconds}
