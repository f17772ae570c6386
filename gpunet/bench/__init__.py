"""`gpunet bench`: gpunet's training step against a plain NumPy (or CuPy) reference and PyTorch.

Every contender trains the same 784-h-10 net from the same initial weights on the same device-resident
data with the same recipe: momentum SGD (lr 0.1, mu 0.9) on shuffled mini-batches, plain gradient descent
for the full batch; each step also accumulates the train loss and accuracy on the device, and each epoch
ends with one read of them to the host (which also synchronises the device before the clock is read).
- gpunet: `gpunet.core.step.TrainStep`, the step `gpunet train` runs (not a copy of it).
- numpy (cupy on cuda): the same equations written the textbook way, a new array for every result.
- pytorch, when importable (never a dependency): the lean loop (nn.Linear layers, cross_entropy,
  torch.optim.SGD, one index_select of the epoch's shuffle, then contiguous slices; no DataLoader), and
  pytorch-gather, a gather per batch with loss and accuracy summed every step.
After one warm-up epoch each, the contenders take turns epoch by epoch (the order rotates), and the table
shows medians. FLOPs are those of the matrix products (forward 2*m*(784h + 10h), backward the same again
less the gradient w.r.t. the pixels); the sgemm rate is measured on the same backend at the step's shapes
(the faster of the whole batch's and, where the CPU takes a batch in row chunks, one chunk's), and the GEMM
floor is the time those products alone take per epoch. Peak memory: each contender runs again
in a fresh subprocess (three epochs) that reports its peak RSS on the CPU, or its memory pool's
size (CuPy) / peak reserved memory (PyTorch) on a GPU.

`--whole-run` times complete training runs of a config's recipe instead (`run_whole`): gpunet through
`gpunet.runs.train.train`, the function `gpunet train` runs, and PyTorch with the same recipe (`torch_run`).
"""

from gpunet.bench.run import CONTENDERS, run_bench
from gpunet.bench.whole import run_whole

__all__ = ["CONTENDERS", "run_bench", "run_whole"]
