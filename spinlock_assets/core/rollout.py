"""The rollout engine: one operator, M realizations, T states streamed one at a time.

``iterate_rollout`` turns the one-step map into a stream of states (state 0 is the initial condition);
``run_rollout`` consumes that stream once and computes, inline, everything generation stores: the F0
base series, one SHA-256 digest per realization over the exact float32 bytes of its states, the first
non-finite step, and (only when asked) the full trajectories. Generation and replay both call
``run_rollout``: there is no second implementation.

How realizations are computed (and why the bits cannot depend on M, the thread count or scheduling):

- Realization m is stepped on its own (batch of one) with its own noise generator, seeded from
  ``noise_seeds[m]``; a step reads only realization m's previous state and writes the new one
  straight into the step's ``[M, C, H, W]`` tensor (no ``torch.cat``). Batching realizations would be
  faster for small operators, but PyTorch picks the convolution backend by batch size (a 3->16 channel
  3x3 conv at 64x64 runs im2col+GEMM at batch 1 and oneDNN at batch 5, with other bits), so
  realization m would depend on M.
- On the CPU every step runs on a worker thread that uses one intra-op thread, so each realization's
  arithmetic is the same single-threaded sequence whatever ``torch.get_num_threads()`` is. The
  parallelism is across realizations instead: ``min(M, torch.get_num_threads())`` workers step
  different realizations at once, each realization's steps strictly in order, up to
  ``LOOKAHEAD_STEPS`` steps ahead of the consumer (so no worker idles at a per-step barrier). Which
  worker runs a step changes nothing. On 2 cores this beats one realization at a time on 2 intra-op
  threads: small convolutions, instance norm and the single-threaded ``normal_`` scale poorly.
- ``run_rollout`` hashes realization m's state on m's own lane right after computing it (so in step
  order), and computes F0 rows on the same workers in chunks; F0 rows are batch-invariant, so the
  chunking does not change them.
- Other devices (CUDA), and the CPU when torch is set to one thread, step the realizations one after
  another on the calling thread; on an accelerator, states reach ``on_state`` (digests) a few steps at a
  time, through one copy to the host, and F0 rows stay on the device until the rollout ends, so the
  device is not drained every step. On CUDA, every step after the first replays a CUDA graph of the
  eager step (same kernels, same noise: the bits do not change, see ``_CudaGraphStep``).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from .features.base import step_features
from .operator import GeneratorNoise, StochasticCNN

__all__ = [
    "CUDA_GRAPH_MIN_STEPS",
    "FEATURE_CHUNK_ELEMENTS",
    "HOST_COPY_STEPS",
    "LOOKAHEAD_STEPS",
    "RolloutRecord",
    "iterate_rollout",
    "rollout_workers",
    "run_rollout",
]

# Base features are computed on chunks of whole steps of at least this many pixels (all channels and
# realizations): enough to amortise per-op overhead on small grids, small enough that the last chunk
# adds little after the rollout's final step. Rows are batch-invariant, so results do not depend on it.
FEATURE_CHUNK_ELEMENTS = 1 << 16
# CUDA rollouts of at least this many states replay steps 2.. as one CUDA graph (see _CudaGraphStep);
# shorter ones are not worth a capture (H200, smallest operator: break-even at 4-5 states, 1.4x faster at
# 8, 1.5x at 16). Bits do not depend on it.
CUDA_GRAPH_MIN_STEPS = 6
# Steps whose states reach a rollout's state hook in one device-to-host copy on an accelerator (where F0
# chunks are also this many times FEATURE_CHUNK_ELEMENTS).
HOST_COPY_STEPS = 8
# How many steps a realization may run ahead of the step the consumer waits for (bounds memory to about
# LOOKAHEAD_STEPS + 2 states [M, C, H, W]); more than 1 so workers do not wait at each step's end.
LOOKAHEAD_STEPS = 4

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


class _WorkerPool:
    """Daemon threads that run submitted callables in FIFO order, their torch ops on one intra-op thread.

    Deliberately minimal (a ``SimpleQueue`` of callables, no futures): a small operator's step takes well
    under a millisecond, and ``ThreadPoolExecutor``'s per-task bookkeeping cost a measurable share of it.
    Callables must not raise (the lane scheduler and :func:`_submit_for_result` catch everything).

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


_pools: dict[tuple[int, int], _WorkerPool] = {}
_pools_lock = threading.Lock()


def _worker_pool(workers: int) -> _WorkerPool:
    """This process's pool of ``workers`` threads (idle threads block on their queue; pools live for the
    process, since starting threads per rollout would cost more than a small rollout). Keyed by pid too:
    a forked child inherits the dict but not the threads."""
    key = (os.getpid(), workers)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = _WorkerPool(workers)
        return _pools[key]


def _submit_for_result(pool: _WorkerPool, fn: Callable[[], object]) -> Future:
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as error:  # re-raised by future.result() in the caller
            future.set_exception(error)

    pool.submit(run)
    return future


class _Lane:
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


def _advance_all(lanes: list[_Lane], states: torch.Tensor, out: torch.Tensor) -> None:
    """One step of every realization, one after another: ``states`` ``[M, C, H, W]`` -> ``out``."""
    for m, lane in enumerate(lanes):
        lane.advance(states[m : m + 1], out[m : m + 1])


class _CudaGraphStep:
    """One step of every realization, captured once as a CUDA graph and replayed for every later step.

    At batch 1 a step is dozens of tiny kernels, so an eager CUDA rollout spends its time launching them;
    a replay launches them all at once. The kernels are the very ones the eager step runs (captured
    after the eager first step has initialised cuDNN and the noise buffers), and each lane's generator
    is registered with the graph, so a replay draws the noise the next eager step would have drawn
    (each replay advances the generator's Philox offset by what the captured draws consume). Bits are
    therefore those of the eager path, which a test on a GPU checks digest for digest.
    """

    def __init__(self, lanes: list[_Lane], template: torch.Tensor) -> None:
        self.lanes = lanes  # the graph reads their weights and noise buffers: keep them alive with it
        self.source, self.target = torch.empty_like(template), torch.empty_like(template)
        self.graph = torch.cuda.CUDAGraph()
        for lane in lanes:
            self.graph.register_generator_state(lane.noise.generator)
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            _advance_all(lanes, self.source, self.target)

    def __call__(self, states: torch.Tensor, out: torch.Tensor) -> None:
        self.source.copy_(states)
        self.graph.replay()
        out.copy_(self.target)


class _LaneScheduler:
    """Runs the lanes' steps on a worker pool and hands out each completed step ``[M, C, H, W]`` in order.

    A lane is queued for one step at a time; when the step is done it queues itself again if the next
    step is within the limit, else it parks until the consumer raises the limit. So each realization's
    steps run in order, one at a time, on whichever worker is free, and its generator and hash are only
    ever used by one thread at a time.
    """

    def __init__(
        self,
        pool: _WorkerPool,
        lanes: list[_Lane],
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


def _stream(
    operator: StochasticCNN,
    initial_condition: torch.Tensor,
    steps: int,
    noise_seeds: Sequence[int],
    on_state: StateHook | None,
) -> Iterator[torch.Tensor]:
    if initial_condition.ndim != 3:
        raise ValueError(f"initial_condition must be [C, H, W]; got shape {tuple(initial_condition.shape)}")
    n = len(noise_seeds)
    first = initial_condition.to(operator.device, torch.float32).unsqueeze(0).expand(n, -1, -1, -1)
    first = first.contiguous()
    if on_state is not None:
        for m in range(n):
            on_state(m, first[m])
    yield first
    if steps <= 1:
        return
    lanes = [_Lane(operator, seed) for seed in noise_seeds]
    workers = rollout_workers(n, operator.device)
    if workers:
        yield from _LaneScheduler(_worker_pool(workers), lanes, first, steps, on_state)
        return
    states = {0: first}
    graphed = operator.device.type == "cuda" and steps >= CUDA_GRAPH_MIN_STEPS
    advance_all = functools.partial(_advance_all, lanes)
    report = _HostReports(on_state, n) if on_state is not None else None
    for t in range(1, steps):
        states[t] = torch.empty_like(first)
        advance_all(states[t - 1], states[t])
        if graphed and t == 1:  # the eager first step was the warm-up
            advance_all = _CudaGraphStep(lanes, first)
        if report is not None:
            report.add(states[t])
        del states[t - 1]
        yield states[t]
    if report is not None:
        report.close()


class _HostReports:
    """Hands the states of a rollout stepped on the calling thread to ``on_state``, in step order.

    On the CPU each state is handed over at once. On an accelerator, states go to the host
    ``HOST_COPY_STEPS`` steps per copy (each synchronous copy would leave the device idle while the next
    kernels are launched); on CUDA the copy is asynchronous, into pinned memory, and a batch is handed
    over only after the next batch's steps are queued, so the host hashes one batch while the device
    computes the next.
    """

    def __init__(self, on_state: StateHook, n_realizations: int) -> None:
        self.on_state, self.n_realizations = on_state, n_realizations
        self.unreported: list[torch.Tensor] = []
        self.in_flight: tuple[torch.Tensor, object] | None = None  # (host states [k, M, C, H, W], event)

    def add(self, states: torch.Tensor) -> None:
        if states.device.type == "cpu":
            self._hand_over(states.unsqueeze(0))
            return
        self.unreported.append(states)
        if len(self.unreported) == HOST_COPY_STEPS:
            self._copy_and_report_previous()

    def close(self) -> None:
        self._copy_and_report_previous()
        self._copy_and_report_previous()

    def _copy_and_report_previous(self) -> None:
        previous, self.in_flight = self.in_flight, None
        if self.unreported:
            stacked, self.unreported = torch.stack(self.unreported), []
            if stacked.device.type == "cuda":
                host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
                host.copy_(stacked, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
                self.in_flight = (host, copied)
            else:
                self.in_flight = (stacked.cpu(), None)
        if previous is not None:
            host, copied = previous
            if copied is not None:
                copied.synchronize()
            self._hand_over(host)

    def _hand_over(self, steps: torch.Tensor) -> None:
        for step_states in steps:
            for m in range(self.n_realizations):
                self.on_state(m, step_states[m])


def iterate_rollout(
    operator: StochasticCNN, initial_condition: torch.Tensor, *, steps: int, noise_seeds: Sequence[int]
) -> Iterator[torch.Tensor]:
    """Yield the ``steps`` states ``[M, C, H, W]`` of M = len(noise_seeds) realizations, starting at the IC.

    Realization m is stepped alone, with noise only from ``noise_seeds[m]`` (see the module docstring).
    Yielded tensors are never modified afterwards.
    """
    return _stream(operator, initial_condition, steps, noise_seeds, on_state=None)


@dataclass
class RolloutRecord:
    """What one rollout leaves behind.

    base_series: ``[M, T, C, 10]`` float32 F0 series. digests: M hex SHA-256 strings.
    first_nonfinite_step: ``[M]`` int32, -1 where every state is finite.
    trajectories: ``[M, T, C, H, W]`` float32 on the CPU, only when requested.
    """

    base_series: np.ndarray
    digests: list[str]
    first_nonfinite_step: np.ndarray
    trajectories: np.ndarray | None = None

    @property
    def diverged(self) -> bool:
        return bool((self.first_nonfinite_step >= 0).any())


class _BaseSeriesAccumulator:
    """Collects states until a chunk holds ``chunk_elements`` pixels, then computes its F0 rows in one
    batch, on ``pool`` when given (results are collected by :meth:`finish`)."""

    def __init__(
        self, n_realizations: int, steps: int, channels: int, pool: _WorkerPool | None, chunk_elements: int
    ) -> None:
        self.series = np.empty((n_realizations, steps, channels, 10), dtype=np.float32)
        self.pool = pool
        self.chunk_elements = chunk_elements
        self.pending: list[torch.Tensor] = []
        self.next_step = 0
        self.chunks: list[tuple[int, Future]] = []

    def update(self, state: torch.Tensor) -> None:
        self.pending.append(state)
        if len(self.pending) * state.numel() >= self.chunk_elements:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunk, self.pending = self.pending, []
        if self.pool is not None:
            future = _submit_for_result(self.pool, lambda: self._rows(chunk))
        else:
            future = _completed(self._rows(chunk))
        self.chunks.append((self.next_step, future))
        self.next_step += len(chunk)

    @staticmethod
    def _rows(states: list[torch.Tensor]) -> torch.Tensor:
        """F0 rows ``[M, k, C, 10]`` of k steps, on the states' device (copied to the host in ``finish``)."""
        chunk = torch.stack(states, dim=1)  # [M, k, C, H, W]
        m, k = chunk.shape[:2]
        return step_features(chunk.reshape(m * k, *chunk.shape[2:])).reshape(m, k, chunk.shape[2], 10)

    def finish(self) -> np.ndarray:
        self.flush()
        for start, future in self.chunks:
            rows = future.result().cpu().numpy()
            self.series[:, start : start + rows.shape[1]] = rows
        return self.series


def _completed(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def run_rollout(
    operator: StochasticCNN,
    initial_condition: torch.Tensor | np.ndarray,
    *,
    steps: int,
    noise_seeds: Sequence[int],
    keep_trajectories: bool = False,
) -> RolloutRecord:
    """Roll out once, computing base series, digests and divergence inline (see the module docstring)."""
    initial_condition = torch.as_tensor(initial_condition)
    n_realizations, channels = len(noise_seeds), initial_condition.shape[0]
    hashes = [hashlib.sha256() for _ in range(n_realizations)]

    def hash_state(m: int, state: torch.Tensor) -> None:  # on realization m's lane, in step order
        hashes[m].update(np.ascontiguousarray(state.cpu().numpy(), dtype="<f4").data)

    workers = rollout_workers(n_realizations, operator.device)
    pool = _worker_pool(workers) if workers else None
    # On an accelerator a chunk costs a few dozen kernel launches whatever its size: make them larger.
    scale = 1 if operator.device.type == "cpu" else HOST_COPY_STEPS
    features = _BaseSeriesAccumulator(
        n_realizations, steps, channels, pool, chunk_elements=FEATURE_CHUNK_ELEMENTS * scale
    )
    trajectories = (
        np.empty((n_realizations, steps, *initial_condition.shape), dtype=np.float32)
        if keep_trajectories
        else None
    )
    for t, state in enumerate(_stream(operator, initial_condition, steps, noise_seeds, on_state=hash_state)):
        features.update(state)
        if trajectories is not None:
            trajectories[:, t] = state.cpu().numpy()
    series = features.finish()
    nonfinite = series[..., -1] > 0  # [M, T, C] nonfinite_frac column
    any_nonfinite = nonfinite.any(axis=2)
    first = np.where(any_nonfinite.any(axis=1), any_nonfinite.argmax(axis=1), -1).astype(np.int32)
    return RolloutRecord(
        base_series=series,
        digests=[h.hexdigest() for h in hashes],
        first_nonfinite_step=first,
        trajectories=trajectories,
    )
