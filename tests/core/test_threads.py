"""The BLAS-thread policy: its decisions driven by a fake clock (no timing), and its scope on the real pools."""

from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

from gpunet.core import threads
from gpunet.core.backend import get_backend
from gpunet.core.model import MLP
from gpunet.core.optim import make_optimizer
from gpunet.core.step import TrainStep
from gpunet.core.threads import BlasThreads, Fixed, Measured, blas_threads, candidates, parse_threads, threads_label
from gpunet.errors import GpunetError

QUIET = {1: 1.0e-3, 2: 0.6e-3}  # seconds per step at each count: two threads win
BUSY = {1: 1.1e-3, 2: 3.6e-3}  # one core taken: two threads spin and lose


def run(chooser, costs, steps):
    """Drive `chooser` for `steps` steps whose time is costs[count]; the counts used, step by step."""
    used = []
    for _ in range(steps):
        n = chooser.threads()
        used.append(n)
        chooser.record(costs[n])
    return used


def numpy_threads():
    return threads.numpy_pools(ThreadpoolController().select(user_api="blas"))[0][0].num_threads


@pytest.mark.parametrize("value, want", [("auto", "auto"), ("1", 1), ("4", 4), (2, 2), (" 3 ", 3), (np.int64(2), 2)])
def test_parse_threads(value, want):
    assert parse_threads(value) == want


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "1.5", 0, True])
def test_parse_threads_refuses(value):
    with pytest.raises(GpunetError, match="--threads .*number of threads"):
        parse_threads(value)


def test_candidates():
    assert candidates(1) == (1,) and candidates(2) == (1, 2) and candidates(4) == (1, 2, 4)
    assert candidates(16) == (1, 8, 16)


def test_worker_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert threads.worker_threads("auto", 2) == 1 and threads.worker_threads("auto", 3) == 1
    assert threads.worker_threads("auto", 1) == "auto" and threads.worker_threads(2, 2) == 2
    monkeypatch.setattr(threads, "cores", lambda: 8)
    assert threads.worker_threads("auto", 2) == 4


@pytest.mark.parametrize("costs, want", [(QUIET, 2), (BUSY, 1)])
def test_measured_picks_the_faster_count(costs, want):
    chooser = Measured([1, 2])
    used = run(chooser, costs, 2000)
    assert chooser.probes[0]["threads"] == want
    assert chooser.probes[0]["seconds_per_step"] == {"1": pytest.approx(costs[1]), "2": pytest.approx(costs[2])}
    assert used[0] == 2  # the untimed warm-up step, at the pool's count
    assert used[-500:] == [want] * 500


def test_measured_prefers_fewer_threads_within_the_margin():
    chooser = Measured([1, 2])
    run(chooser, {1: 1.0e-3, 2: 0.98e-3}, 1000)
    assert chooser.probes[0]["threads"] == 1


def test_measured_ignores_the_warmup_step():
    chooser = Measured([1, 2], warmup=1)
    chooser.record(5.0)  # the first step allocates: a huge time at count 2, not counted against it
    run(chooser, QUIET, 1000)
    assert chooser.probes[0]["threads"] == 2


def test_probe_order_and_blocks():
    """Blocks of at least block_seconds in the order chosen, other, other, chosen; one step each when a step
    is longer than a block (the full batch)."""
    chooser = Measured([1, 2], block_seconds=0.05, warmup=0)
    assert run(chooser, {1: 0.3, 2: 0.2}, 4) == [2, 1, 1, 2]
    assert chooser.probes[0]["threads"] == 2
    chooser = Measured([1, 2], block_seconds=0.05, warmup=0)
    used = run(chooser, {1: 0.01, 2: 0.01}, 20)
    assert used == [2] * 5 + [1] * 10 + [2] * 5


def test_a_count_far_slower_gets_no_second_block():
    chooser = Measured([1, 2], block_seconds=0.05, warmup=0)
    used = run(chooser, {1: 0.01, 2: 0.03}, 12)  # two threads 3x slower: one block of them, then two of one
    assert used == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] and chooser.probes[0]["threads"] == 1


def test_a_load_that_arrives_is_noticed_and_probing_stays_cheap():
    """Quiet for 60 s of steps, then one core busy for 60 s: the chooser moves to one thread within a second
    (its steps got slower than measured), and its probes cost under 5% against always running the best count
    of each phase."""
    chooser = Measured([1, 2])
    spent, ideal, switched_at = 0.0, 0.0, None
    for costs, phase in ((QUIET, "quiet"), (BUSY, "busy")):
        start = spent
        while spent - start < 60.0:
            n = chooser.threads()
            spent += costs[n]
            ideal += min(costs.values())
            chooser.record(costs[n])
            if phase == "busy" and switched_at is None and chooser.chosen == 1:
                switched_at = spent - start
    assert [p["threads"] for p in chooser.probes][:2] == [2, 2] and chooser.probes[-1]["threads"] == 1
    assert switched_at is not None and switched_at < 1.0
    assert chooser.probes[0]["why"] == "first"
    assert next(p for p in chooser.probes if p["threads"] == 1)["why"] == "slower"
    assert spent / ideal < 1.05


def test_intervals_double_while_the_choice_stands_up_to_the_longest():
    chooser = Measured([1, 2], max_interval=8.0)
    intervals = []
    for _ in range(200_000):
        chooser.record(QUIET[chooser.threads()])
        if chooser.probes and (not intervals or intervals[-1] != chooser.interval):
            intervals.append(chooser.interval)
    probe = 0.2  # two blocks of 0.05 s at each count
    assert intervals[0] == pytest.approx(threads.FACTOR * probe, rel=0.05)
    assert intervals[-1] == pytest.approx(8.0, rel=0.05) or intervals[-1] == pytest.approx(intervals[0], rel=0.05)
    assert max(intervals) <= max(8.0, intervals[0]) * 1.001


def test_fixed_scope_sets_numpy_pool_and_restores_it():
    pytest.importorskip("scipy.linalg")  # SciPy's wheel loads a second OpenBLAS
    before = {lib.filepath: lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers}
    scope = blas_threads(1, get_backend("cpu"), 128, (784, 128, 10))
    assert scope.report["policy"] == "asked" and scope.report["threads"] == 1
    with scope:
        with scope.step():
            inside = ThreadpoolController().select(user_api="blas").lib_controllers
            assert all(lib.num_threads == 1 for lib in inside)
    after = {lib.filepath: lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers}
    assert after == before
    assert scope.report["steps_at"] == {"1": 1} and threads_label(scope.report) == "1"


@pytest.mark.skipif(numpy_threads() < 2, reason="NumPy's BLAS pool has one thread here")
def test_measured_scope_applies_the_chosen_count_to_the_pool():
    """A fake clock that charges each step by the threads NumPy's pool really has: the scope sets the count
    the chooser names, so it settles where the fake machine is fastest (one thread: a busy machine)."""
    now = [0.0]
    controller = ThreadpoolController().select(user_api="blas")
    pool = threads.numpy_pools(controller)[0][0]

    def clock():
        return now[0]

    scope = BlasThreads(Measured([1, 2]), "auto", "measured", controller, clock)
    with scope:
        for _ in range(400):
            with scope.step():
                now[0] += BUSY[pool.num_threads]
        assert pool.num_threads == 1
    assert scope.report["probes"][0]["threads"] == 1 and scope.report["threads"] == 1
    label = threads_label(scope.report)
    assert scope.report["steps_at"]["2"] > 0 and label.startswith("auto: 1 (") and label.endswith("% at 2)")


def test_policy(monkeypatch):
    cpu = get_backend("cpu")
    assert blas_threads("auto", SimpleNamespace(name="cuda"), 128, (784, 128, 10)).report["policy"].startswith(
        "left as set")
    small = blas_threads("auto", cpu, 8, (64, 16, 10))
    assert isinstance(small.chooser, Fixed) and small.chooser.n == 1
    assert small.report["policy"] in ("small products", "one thread available")
    monkeypatch.setattr(threads, "cores", lambda: 1)
    assert blas_threads("auto", cpu, 128, (784, 128, 10)).report["policy"] == "one thread available"
    monkeypatch.setattr(threads, "cores", lambda: 2)
    if numpy_threads() >= 2:
        big = blas_threads("auto", cpu, 128, (784, 128, 10))
        assert big.report["policy"] == "measured" and big.report["candidates"] == [1, 2]
    with pytest.raises(GpunetError):
        blas_threads("many", cpu, 128, (784, 128, 10))


def test_results_do_not_depend_on_the_thread_count(rng):
    """The same steps at 1 and at the pool's count give the same weights (OpenBLAS splits no sums)."""
    backend = get_backend("cpu")
    X = rng.random((512, 784), dtype=np.float32)
    y = rng.integers(0, 10, 512).astype(np.int32)
    Y = np.eye(10, dtype=np.float32)[y]
    weights = []
    for n in (1, max(2, numpy_threads())):
        net = MLP(backend, (784, 128, 10), seed=0)
        step = TrainStep(net, make_optimizer("momentum", backend, net.params), X, Y, y)
        scope = blas_threads(n, backend, 256, net.sizes)
        with scope:
            for s, idx in step.batches(256, (0, 1)):
                with scope.step():
                    step(idx, 0.1)
        weights.append(net.state_dict())
    for k in weights[0]:
        np.testing.assert_allclose(weights[0][k], weights[1][k], rtol=1e-6, atol=1e-7)
