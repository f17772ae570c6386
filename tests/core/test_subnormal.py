"""No parameter or optimizer state holds a float32 subnormal after a thousand batch-128 steps on MNIST
(a rarely lit pixel's momentum would otherwise decay into them after about 850 steps at mu = 0.9, and slow
every update that touches it)."""

import numpy as np
import pytest

from gpunet.bench.contenders import load_data
from gpunet.core.model import MLP
from gpunet.core.optim import make_optimizer
from gpunet.core.step import TrainStep


def subnormal_count(backend, arrays):
    tiny = np.finfo(np.float32).tiny
    return {k: int(((a != 0) & (np.abs(a) < tiny)).sum()) for k, a in
            ((k, backend.to_numpy(v)) for k, v in arrays.items())}


@pytest.mark.parametrize("name, lr", [("gd", 0.1), ("momentum", 0.1), ("adam", 0.001)])
def test_no_subnormals_after_a_thousand_steps(backend, name, lr):
    data = load_data(backend, 3200)
    net = MLP(backend, seed=0)
    opt = make_optimizer(name, backend, net.params)
    step = TrainStep(net, opt, data.X, data.Y, data.y)
    for epoch in range(40):  # 25 steps of 128 per epoch, 1,000 in all
        perm = backend.permutation(data.m, (0, epoch))
        for s in range(0, data.m, 128):
            step(perm[s:s + 128], lr)
            if opt.t % 100 == 0 or opt.t > 960:
                counts = subnormal_count(backend, {**net.params, **{f"{slot}.{k}": S for slot, arrays in opt.state.items()
                                                                    for k, S in arrays.items()}})
                assert sum(counts.values()) == 0, f"step {opt.t}: {counts}"
