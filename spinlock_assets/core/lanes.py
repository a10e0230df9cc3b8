"""Lanes: realizations stepped alone (batch 1) on a process-wide pool of single-threaded workers.

This is the per-realization formulation of the rollout engine (``formulation="per_realization"`` in
:mod:`.rollout`): realization m is stepped on its own with its own noise generator; a step reads only
realization m's previous state and writes the new one straight into the step's ``[M, C, H, W]`` tensor.
On the CPU every step runs on a worker thread that uses one intra-op thread, so each realization's
arithmetic is the same single-threaded sequence whatever ``torch.get_num_threads()`` is; the parallelism is
across realizations: ``min(M, torch.get_num_threads())`` workers step different realizations at once, each
realization's steps strictly in order, up to ``LOOKAHEAD_STEPS`` steps ahead of the consumer.

It is selectable on the CPU (``formulation="per_realization"``); the batched formulation
(:mod:`.batching`) is the CPU default, and this one runs on CUDA (on the calling thread). The same pool
runs whole rollouts of several operators at once (:func:`map_on_workers`, used by ``generation.roll_out``
and ``verification.verify_records``): inside a worker a rollout runs on its one thread.
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import TypeVar

import torch

from .operator import GeneratorNoise, StochasticCNN

__all__ = [
    "LOOKAHEAD_STEPS",
    "Lane",
    "LaneScheduler",
    "WorkerPool",
    "map_on_workers",
    "rollout_workers",
    "submit_for_result",
    "worker_pool",
]

T = TypeVar("T")
R = TypeVar("R")

# How many steps a realization may run ahead of the step the consumer waits for (bounds memory to about
# LOOKAHEAD_STEPS + 2 states [M, C, H, W]); more than 1 so workers do not wait at each step's end.
LOOKAHEAD_STEPS = 4

# How many items per worker map_on_workers submits ahead of the one the consumer waits for: items differ in
# cost (operators of one shard by 100x), and a worker idles once everything submitted behind a long head item
# is done. Results held meanwhile are small, except replays that keep trajectories (MAP_AHEAD * workers of
# them at most).
MAP_AHEAD = 4

# Called as on_state(m, state) with realization m's new state [C, H, W], in step order for each m.
StateHook = Callable[[int, torch.Tensor], None]


def rollout_workers(n_realizations: int, device: str | torch.device = "cpu") -> int:
    """How many worker threads a rollout of ``n_realizations`` runs its steps on: ``min(M,
    torch.get_num_threads())`` on the CPU; 0 (steps run on the calling thread) on other devices, and on the
    CPU when torch runs one thread, since the calling thread then computes exactly as a worker would."""
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        return 0
    return min(n_realizations, threads)


class WorkerPool:
    """Daemon threads that run submitted callables in FIFO order, their torch ops on one intra-op thread.

    Deliberately minimal (a ``SimpleQueue`` of callables, no futures): a small operator's step takes well
    under a millisecond, and ``ThreadPoolExecutor``'s per-task bookkeeping cost a measurable share of it.
    Callables must not raise (the lane scheduler and :func:`submit_for_result` catch everything).

    Daemon threads idle in ``get()`` do not hold up interpreter exit. But a worker must not be freeing
    tensors when the interpreter finalizes (a thread that re-takes the GIL then is unwound through C++
    and the process aborts), so an ``atexit`` hook waits until every submitted task has finished and
    been dropped.
    """

    def __init__(self, workers: int) -> None:
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.unfinished = 0  # submitted tasks not yet finished and dropped
        self.finished = threading.Condition()
        intra_op_threads = torch.get_num_threads()
        started = threading.Barrier(workers + 1)
        for i in range(workers):
            name = f"rollout-worker-{i}"
            threading.Thread(target=self._work, args=(started,), name=name, daemon=True).start()
        started.wait()
        # torch.set_num_threads (called by each worker for itself) also sets the default that threads
        # started later inherit; put that default back (this thread's own count is unchanged).
        torch.set_num_threads(intra_op_threads)
        atexit.register(self.wait_until_idle)

    def _work(self, started: threading.Barrier) -> None:
        # OpenMP thread counts are per calling thread. torch initialises a thread's count lazily, from the
        # process-wide default, on its first parallel op; get_num_threads() runs that initialisation
        # now, so it cannot later override the 1 set here.
        torch.get_num_threads()
        torch.set_num_threads(1)
        started.wait()
        while True:
            task = self.tasks.get()
            task()
            del task  # drop what the task holds before it counts as finished
            with self.finished:
                self.unfinished -= 1
                self.finished.notify_all()

    def submit(self, task: Callable[[], None]) -> None:
        with self.finished:
            self.unfinished += 1
        self.tasks.put(task)

    def wait_until_idle(self) -> None:
        with self.finished:
            self.finished.wait_for(lambda: self.unfinished == 0)


_pools: dict[tuple[int, int], WorkerPool] = {}
_pools_lock = threading.Lock()


def worker_pool(workers: int) -> WorkerPool:
    """This process's pool of ``workers`` threads (idle threads block on their queue; pools live for the
    process, since starting threads per rollout would cost more than a small rollout). Keyed by pid too:
    a forked child inherits the dict but not the threads."""
    key = (os.getpid(), workers)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = WorkerPool(workers)
        return _pools[key]


def submit_for_result(pool: WorkerPool, fn: Callable[[], object]) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as error:  # re-raised by future.result() in the caller
            future.set_exception(error)

    pool.submit(run)
    return future


def map_on_workers(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[R]:
    """``fn(item)`` for every item, in order, computed on ``workers`` single-threaded workers (one item per
    worker at a time, at most ``MAP_AHEAD * workers`` items submitted ahead of the consumer, so a long item
    at the head does not leave the other workers idle); on the calling thread, one after another, when
    ``workers`` <= 1.

    Every torch op of ``fn`` then runs on one intra-op thread whatever the caller's count, so its bits are
    those of a single-threaded run; the parallelism is across items. ``fn`` must not wait for work it
    submits to the same pool (with one intra-op thread, the rollout engine submits none). If ``fn`` raises,
    the error is re-raised in order, after the items already running have finished.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = worker_pool(workers)
    pending: collections.deque[Future] = collections.deque()
    remaining = iter(items)
    try:
        for item in remaining:
            pending.append(submit_for_result(pool, lambda item=item: fn(item)))
            if len(pending) == MAP_AHEAD * workers:
                break
        while pending:
            result = pending.popleft().result()
            following = next(remaining, _END)
            if following is not _END:
                pending.append(submit_for_result(pool, lambda item=following: fn(item)))
            yield result
    finally:  # on an error or an abandoned iteration: no worker is left computing for nobody
        for future in pending:
            future.exception()


_END = object()


class Lane:
    """One realization: its noise generator and the next step it will compute."""

    def __init__(self, operator: StochasticCNN, seed: int) -> None:
        self.operator = operator
        self.noise = GeneratorNoise(seed, operator.device)
        self.next_step = 1

    def step(self, states: dict[int, torch.Tensor], m: int) -> torch.Tensor:
        """Compute state ``next_step`` of realization m from the previous one, in place in ``states``
        (no ``torch.cat`` of the realizations); returns it ``[C, H, W]``."""
        t = self.next_step
        return self.advance(states[t - 1][m : m + 1], states[t][m : m + 1])[0]

    def advance(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """One step of this realization from ``x`` ``[1, C, H, W]`` into ``out`` (same shape)."""
        return self.operator.update(x, self.operator.apply(x, self.noise), out=out)


class LaneScheduler:
    """Runs the lanes' steps on a worker pool and hands out each completed step ``[M, C, H, W]`` in order.

    A lane is queued for one step at a time; when the step is done it queues itself again if the next
    step is within the limit, else it parks until the consumer raises the limit. So each realization's
    steps run in order, one at a time, on whichever worker is free, and its generator and hash are only
    ever used by one thread at a time.
    """

    def __init__(
        self,
        pool: WorkerPool,
        lanes: list[Lane],
        first: torch.Tensor,
        steps: int,
        on_state: StateHook | None,
    ) -> None:
        self.pool, self.lanes, self.steps, self.on_state = pool, lanes, steps, on_state
        self.first = first
        self.states: dict[int, torch.Tensor] = {0: first}  # step -> [M, C, H, W], allocated up to the limit
        self.changed = threading.Condition()  # guards everything below
        self.completed: dict[int, int] = {}  # step -> realizations done with it
        self.limit = 0
        self.parked = list(range(len(lanes)))  # lanes whose next step is beyond the limit
        self.queued = 0  # lanes queued or running
        self.closed = False
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.lanes)
        try:
            self._raise_limit(LOOKAHEAD_STEPS)
            for t in range(1, self.steps):
                with self.changed:
                    self.changed.wait_for(lambda t=t: self.completed[t] == n or self.error is not None)
                    if self.error is not None:
                        raise self.error
                    # every lane is past step t, so nobody reads step t-1 any more
                    del self.completed[t], self.states[t - 1]
                self._raise_limit(t + LOOKAHEAD_STEPS)
                yield self.states[t]
        finally:
            with self.changed:  # return only when no worker touches our tensors any more
                self.closed = True
                self.changed.wait_for(lambda: self.queued == 0)

    def _raise_limit(self, limit: int) -> None:
        with self.changed:
            limit = min(limit, self.steps - 1)
            for t in range(self.limit + 1, limit + 1):
                self.states[t] = torch.empty_like(self.first)
                self.completed[t] = 0
            self.limit = limit
            for m in self.parked:
                self._queue(m)
            self.parked = []

    def _queue(self, m: int) -> None:  # lock held
        self.queued += 1
        self.pool.submit(lambda: self._advance(m))

    def _advance(self, m: int) -> None:  # on a worker
        lane = self.lanes[m]
        error = None
        try:
            state = lane.step(self.states, m)
            if self.on_state is not None:
                self.on_state(m, state)
        except BaseException as caught:  # handed to the consumer, which re-raises it
            error = caught
        with self.changed:
            self.queued -= 1
            if error is not None:
                self.error = error
                self.changed.notify_all()
                return
            self.completed[lane.next_step] += 1
            if self.completed[lane.next_step] == len(self.lanes) or self.closed:
                self.changed.notify_all()  # wake the consumer only when what it waits for may be true
            lane.next_step += 1
            if self.closed or lane.next_step >= self.steps:
                pass
            elif lane.next_step <= self.limit:
                self._queue(m)
            else:
                self.parked.append(m)
