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


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "1.5", 0, True, "\u00b2", "\u0663", "1025", 1025,
                                   "9" * 5000, 10 ** 100, "\x1b[31m2"], ids=lambda v: ascii(v)[:20])
def test_parse_threads_refuses(value):
    with pytest.raises(GpunetError, match="--threads .*number of threads") as e:
        parse_threads(value)
    assert len(str(e.value)) < 200 and "\x1b" not in str(e.value)


def test_candidates():
    assert candidates(1) == (1,) and candidates(2) == (1, 2) and candidates(4) == (1, 2, 4)
    assert candidates(16) == (1, 8, 16)


def test_worker_threads_share_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 2)
    assert threads.worker_threads("auto", 2) == 1 and threads.worker_threads("auto", 3) == 1
    assert threads.worker_threads("auto", 1) == "auto" and threads.worker_threads(2, 2) == 2
    monkeypatch.setattr(threads, "cores", lambda: 8)
    assert threads.worker_threads("auto", 2) == 4


def phases(chooser, *loads, seconds=60.0):
    """Drive `chooser` through `seconds` of steps under each of `loads` (costs per count) in turn; returns the
    time spent, the time the best count of each phase would have taken, and for each phase the seconds of
    steps until the chooser chose that phase's best count (None: never)."""
    spent, ideal, settled = 0.0, 0.0, []
    for costs in loads:
        start, best, at = spent, min(costs, key=costs.get), None
        while spent - start < seconds:
            n = chooser.threads()
            spent += costs[n]
            ideal += costs[best]
            chooser.record(costs[n])
            if at is None and chooser.chosen == best:
                at = spent - start
        settled.append(at)
    return spent, ideal, settled


@pytest.mark.parametrize("costs, want", [(QUIET, 2), (BUSY, 1)])
def test_measured_picks_the_faster_count(costs, want):
    chooser = Measured([1, 2])
    used = run(chooser, costs, 20_000)
    other = 3 - want
    assert chooser.first["threads"] == want and chooser.chosen == want
    assert chooser.first["estimates"] == {str(want): 1.0, str(other): pytest.approx(costs[other] / costs[want])}
    assert used[0] == 1  # the untimed warm-up block, at the fewer threads
    assert used.count(other) < 0.05 * len(used)  # the trials
    assert sum(costs[n] for n in used) / (len(used) * costs[want]) < 1 + 2 * threads.BUDGET  # what they cost
    assert chooser.trials > 1 and chooser.report()["trials"] == chooser.trials


def test_measured_prefers_fewer_threads_within_the_margin():
    chooser = Measured([1, 2])
    run(chooser, {1: 1.0e-3, 2: 0.98e-3}, 2000)
    assert chooser.first["threads"] == 1 and chooser.chosen == 1 and chooser.switches == 0
    chooser = Measured([1, 2])
    run(chooser, {1: 1.0e-3, 2: 0.95e-3}, 2000)  # faster by more than the margin
    assert chooser.chosen == 2 and chooser.switches == 1


def test_measured_ignores_the_warmup_block():
    chooser = Measured([1, 2])
    chooser.record(5.0)  # the first step allocates: a huge time at count 1, not counted against it
    run(chooser, QUIET, 2000)
    assert chooser.first["threads"] == 2 and chooser.first["estimates"]["1"] == pytest.approx(QUIET[1] / QUIET[2])


def test_blocks_and_the_first_trial():
    """Blocks of at least block_seconds: the warm-up and a chosen block at the fewer threads, a trial at the
    other count (more threads: an untimed block at them first), and a chosen block not measured (the trial's
    threads may still spin); one step each when a step is longer than a block (the full batch)."""
    chooser = Measured([1, 2], block_seconds=0.05)
    assert run(chooser, {1: 0.01, 2: 0.01}, 25) == [1] * 10 + [2] * 10 + [1] * 5
    assert chooser.trials == 1 and chooser.first["threads"] == 1  # as fast: the fewer threads
    assert Measured([1, 8, 16]).threads() == 8 and Measured([1, 2, 4]).threads() == 2
    chooser = Measured([1, 2], block_seconds=0.05)
    assert run(chooser, {1: 0.3, 2: 0.2}, 5) == [1, 1, 2, 2, 2]
    assert chooser.first == {"step": 4, "threads": 2, "estimates": {"1": pytest.approx(1.5), "2": 1.0}}
    chooser = Measured([1, 2], block_seconds=0.05, budget=1e9)  # trials as often as they can be
    used = run(chooser, {1: 0.1, 2: 0.3}, 12)  # one thread faster: trials at 2 after an untimed block at 2
    assert used == [1, 1, 2, 2, 1, 1, 2, 2, 1, 1, 2, 2]
    assert chooser.trials == 3 and chooser.estimates[2] == pytest.approx(3.0)


def test_trials_cost_the_budget():
    """After the first choice a count's trials come when what a block at it lost is `budget` of the steps since:
    at 1.5x slower, a block loses a third of its time, so one block of trial per 1/3 x 0.05 / 0.02 s of steps."""
    chooser = Measured([1, 2], block_seconds=0.05, budget=0.02)
    used = run(chooser, {1: 0.003, 2: 0.002}, 20_000)  # 40 s of steps at 2
    trial_blocks = sum(1 for a, b in zip(used, used[1:]) if a == 2 and b == 1)
    gap = 0.05 * (1 - 1 / 1.5) / 0.02
    assert trial_blocks == pytest.approx(40.0 / (gap + 0.1), rel=0.1)
    estimate = chooser.estimates[1]
    assert estimate == pytest.approx(1.5) and chooser.switches == 1


@pytest.mark.parametrize("budget", [threads.BUDGET, 0.05])
def test_a_load_that_arrives_and_leaves_is_followed_cheaply(budget):
    """Quiet for 60 s of steps, one core busy for 60 s, quiet again: the chooser moves to one thread within
    a few blocks of the load (its blocks got slower than the chosen's recent ones), back to two within
    2 block_seconds / budget seconds of the load leaving, and all that costs a few percent against always
    running each phase's best count."""
    chooser = Measured([1, 2], budget=budget)
    spent, ideal, settled = phases(chooser, QUIET, BUSY, QUIET)
    assert settled[1] < 0.5 and settled[2] < 2 * threads.BLOCK_SECONDS / budget + 0.5
    assert spent / ideal < 1 + budget + 0.02
    assert chooser.switches == 3 and chooser.chosen == 2  # to 2, to 1 under the load, to 2 again


def test_estimates_average_the_trials_unless_one_is_far_off():
    chooser = Measured([1, 2])
    run(chooser, QUIET, 5000)
    old = chooser.estimates[1]
    assert chooser.chosen == 2 and old == pytest.approx(QUIET[1] / QUIET[2])
    chooser.before = 1e-3  # the chosen block's seconds per step
    chooser.judge(1, 1.2 * old * 1e-3, 0.05)  # a trial 20% slower than estimated (noise)
    assert chooser.estimates[1] == pytest.approx(old * 1.2 ** threads.WEIGHT) and chooser.chosen == 2
    chooser.judge(1, 0.5e-3, 0.05)  # twice as fast as the chosen count: the machine changed
    assert chooser.chosen == 1 and chooser.estimates == {1: 1.0, 2: pytest.approx(2.0)}


def test_one_slow_block_is_not_a_load():
    """A single chosen block three times slower (a hiccup) keeps the estimates; two in a row measure afresh."""
    chooser = Measured([1, 2])
    run(chooser, QUIET, 5000)
    trials, estimates = chooser.trials, dict(chooser.estimates)
    while chooser.threads() != 2 or chooser.block != [0.0, 0] or chooser.settling:
        chooser.record(QUIET[chooser.threads()])
    for _ in range(30):  # one block (0.05 s) of steps at three times the time
        chooser.record(3 * QUIET[2])
    run(chooser, QUIET, 100)
    assert chooser.estimates == estimates and chooser.trials == trials
    for _ in range(60):  # two blocks
        chooser.record(3 * QUIET[2])
    assert chooser.estimates[1] is None and chooser.due[1] <= chooser.ran  # measured afresh, now
    chooser = Measured([1, 2])
    run(chooser, BUSY, 5000)
    estimates, due = dict(chooser.estimates), dict(chooser.due)
    for _ in range(100):  # two blocks and more, three times slower: more threads would not help
        chooser.record(3 * BUSY[1])
    assert chooser.chosen == 1 and chooser.estimates == estimates and chooser.due == due


def test_a_pause_leaves_the_short_steps_after_it_untimed():
    """After a pause the first `cold` seconds of short steps are not timed (a cold start is not held against
    the count that runs them); a step as long as that is timed (the full batch, where it hardly shows)."""
    chooser = Measured([1, 2])
    run(chooser, QUIET, 5000)
    block, steps = list(chooser.block), chooser.steps
    chooser.pause()
    for _ in range(5):
        chooser.record(0.002)  # cold steps: 10 ms in all
    assert chooser.block == block and chooser.steps == steps + 5
    chooser.record(QUIET[chooser.threads()])
    assert chooser.block[1] == block[1] + 1
    chooser.pause()
    ran = chooser.ran
    chooser.record(0.3)
    assert chooser.block == [0.0, 0] and chooser.ran > ran + 0.3  # timed: it ended the block


def test_a_trial_starts_with_its_short_steps_untimed():
    chooser = Measured([1, 2])
    for _ in range(20_000):
        count = chooser.count
        chooser.record(QUIET[count])
        if chooser.count not in (count, chooser.chosen):  # a trial starts
            assert chooser.chill == threads.COLD
            block = list(chooser.block)
            chooser.record(0.004)  # a first step slow as the pool's threads wake: not in the block
            assert chooser.block == block
            return
    pytest.fail("no trial started")


def test_a_pause_drops_a_trial_under_way():
    """Short steps each after a pause never finish a block: a trial under way is dropped, not run forever."""
    chooser = Measured([1, 2])
    run(chooser, QUIET, 5000)
    while chooser.count == chooser.chosen:
        chooser.record(QUIET[chooser.count])
    trials = chooser.trials
    for _ in range(1000):
        chooser.pause()
        chooser.record(0.001)
    assert chooser.count == chooser.chosen == 2 and chooser.trials == trials


def test_long_steps_each_after_a_pause_finish_their_trials():
    """Full-batch steps, each after a pause (epochs taking turns with other work in `gpunet bench`): trials
    still run, and the faster count is found."""
    chooser = Measured([1, 2])
    costs = {1: 0.35, 2: 0.21}
    for _ in range(20):
        chooser.pause()
        chooser.record(costs[chooser.threads()])
    assert chooser.chosen == 2 and chooser.trials >= 1


def test_the_scope_tells_the_chooser_of_a_pause():
    now = [0.0]
    scope = BlasThreads(Measured([1, 2]), "auto", "measured", None, lambda: now[0])
    pauses = []
    scope.chooser.pause = lambda: pauses.append(now[0])
    for gap in (0.0, 0.001, threads.PAUSE * 2, 0.001):
        now[0] += gap
        with scope.step():
            now[0] += 0.001
    assert pauses == [pytest.approx(0.003 + threads.PAUSE * 2)]


def test_many_candidates_settle_on_the_fastest():
    chooser = Measured([1, 8, 16])
    spent, ideal, settled = phases(chooser, {1: 4e-3, 8: 1e-3, 16: 1.5e-3}, {1: 2e-3, 8: 3e-3, 16: 9e-3},
                                   seconds=30.0)
    assert chooser.first["threads"] == 8 and chooser.chosen == 1
    assert settled[0] < 1.0 and settled[1] < 1.0 and spent / ideal < 1.05
    assert set(chooser.first["estimates"]) == {"1", "8", "16"}


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
    the chooser names, so it settles where the fake machine is fastest (one thread: a busy machine), and the
    report follows the chooser."""
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
    assert scope.report["first"]["threads"] == 1 and scope.report["threads"] == 1
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
