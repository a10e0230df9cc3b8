"""The rollout engine: one operator, M realizations, T states streamed one at a time.

``iterate_rollout`` turns the one-step map into a stream of states (state 0 is the initial condition);
``run_rollout`` consumes that stream once and computes, inline, everything generation stores: the F0
base series, one SHA-256 digest per realization over the exact float32 bytes of its states, the first
non-finite step, and (only when asked) the full trajectories. Generation and replay both call
``run_rollout``: there is no second implementation.

How realizations are computed (``formulation``), and why the bits cannot depend on M, on which
realizations share a batch, on the thread count or on scheduling:

- ``"batched"`` (:mod:`.batching`; the CPU default): all realizations are stepped together, one batch per
  layer, every convolution at a canonical batch size decided by the layer shape alone (unused slots hold
  zeros); every op of a step is per-sample invariant (proven with bits, and checked per layer shape at
  start-up), and each realization draws its noise from its own generator into its own slot. Every step
  runs on one intra-op thread (``batching.one_intra_op_thread``), so its bits do not depend on the caller's
  thread count either (MKL's matrix products in the narrow output layers would: measured, 10 of 40
  operators of a C=1, 8x8 spec changed digests between 1, 2 and 3 threads when the step ran on them).
- ``"per_realization"`` (:mod:`.lanes`; the default on CUDA, selectable on the CPU): realization m is
  stepped alone (batch 1) with its own noise generator. On the CPU the steps run on a pool of
  single-threaded workers, one realization per worker at a time (or on the calling thread when it runs one
  intra-op thread: the same single-threaded arithmetic); on CUDA they run one after another on the calling
  thread, and every step after the first replays a CUDA graph of the eager step (same kernels, same noise:
  the bits do not change, see ``_CudaGraphStep``). CUDA stays on this formulation: batching there needs
  kernels whose reduction order does not depend on the batch, which cuDNN does not promise (not built).

The two formulations give different bits (each reproducible on its own; the execution fingerprint names
the one generation used). Parallelism on the CPU is across operators: ``generation.roll_out`` (generation,
family replay) and ``verification.verify_records`` run :func:`operators_at_once` operators at once, each on
a single-threaded worker, so it changes no bits. A lone batched rollout on a thread with spare intra-op
threads steps on that thread and hands the next step's noise draws (``batching.NoiseAhead``) and its F0
chunks to the workers: the same numbers, computed earlier elsewhere (measured: 0.99x the per-realization
engine's time alone on the 4 smallest architectures, 1.54x over the 16 sampled operators, whose
convolutions the per-realization engine spreads over both cores).

``run_rollout`` hashes realization m's states in step order, and computes F0 rows in chunks of whole steps
(on the lanes' workers in the per-realization formulation); F0 rows are batch-invariant, so the chunking
does not change them. On an accelerator, states reach ``on_state`` (digests) a few steps at a time, through
one copy to the host, and F0 rows stay on the device until the rollout ends, so the device is not drained
every step.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from .batching import BatchedSteps, NoiseAhead
from .features.base import step_features
from .lanes import Lane, LaneScheduler, StateHook, WorkerPool, rollout_workers, submit_for_result, worker_pool
from .operator import StochasticCNN

__all__ = [
    "CUDA_GRAPH_MIN_STEPS",
    "FEATURE_CHUNK_ELEMENTS",
    "FORMULATIONS",
    "HOST_COPY_STEPS",
    "RolloutRecord",
    "default_formulation",
    "iterate_rollout",
    "operators_at_once",
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
# How realizations are computed (see the module docstring). The two give different bits: each is
# reproducible on its own, and the execution fingerprint names the one generation used.
FORMULATIONS = ("batched", "per_realization")


def default_formulation(device: str | torch.device = "cpu") -> str:
    """``"batched"`` on the CPU (1.04-1.06x the per-realization engine's generation throughput over the
    benchmark's 16 sampled operators, 1.30-1.40x on the 4 smallest; ``benchmarks/bench_engine.py``),
    ``"per_realization"`` elsewhere (CUDA has no batch-invariant batched step)."""
    return "batched" if torch.device(device).type == "cpu" else "per_realization"


def operators_at_once(device: str | torch.device = "cpu", n_operators: int | None = None) -> int:
    """How many of ``n_operators`` operators :func:`~spinlock_assets.core.generation.roll_out` rolls out at
    once: on the CPU ``torch.get_num_threads()``, each on a worker with one intra-op thread (both
    formulations compute on one thread per realization or per batch, so bits do not change; only the
    parallelism moves from within an operator to across operators); one on other devices, and for a lone
    operator (which then rolls out on the calling thread, its spare threads helping it)."""
    at_once = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    return at_once if n_operators is None else min(at_once, n_operators)


def _advance_all(lanes: list[Lane], states: torch.Tensor, out: torch.Tensor) -> None:
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

    def __init__(self, lanes: list[Lane], template: torch.Tensor) -> None:
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


def _stream(
    operator: StochasticCNN,
    initial_condition: torch.Tensor,
    steps: int,
    noise_seeds: Sequence[int],
    on_state: StateHook | None,
    formulation: str,
) -> Iterator[torch.Tensor]:
    if initial_condition.ndim != 3:
        raise ValueError(f"initial_condition must be [C, H, W]; got shape {tuple(initial_condition.shape)}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}; got {formulation!r}")
    if formulation == "batched" and operator.device.type != "cpu":
        raise ValueError("the batched formulation is CPU-only (see core/rollout.py)")
    n = len(noise_seeds)
    first = initial_condition.to(operator.device, torch.float32).unsqueeze(0).expand(n, -1, -1, -1)
    first = first.contiguous()
    if on_state is not None:
        for m in range(n):
            on_state(m, first[m])
    yield first
    if steps <= 1:
        return
    report = _HostReports(on_state, n) if on_state is not None else None
    if formulation == "batched":
        yield from _batched_steps(operator, first, steps, noise_seeds, report)
        return
    lanes = [Lane(operator, seed) for seed in noise_seeds]
    workers = rollout_workers(n, operator.device)
    if workers:
        yield from LaneScheduler(worker_pool(workers), lanes, first, steps, on_state)
        return
    states = {0: first}
    graphed = operator.device.type == "cuda" and steps >= CUDA_GRAPH_MIN_STEPS
    advance_all = functools.partial(_advance_all, lanes)
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


def _batched_steps(
    operator: StochasticCNN,
    first: torch.Tensor,
    steps: int,
    noise_seeds: Sequence[int],
    report: _HostReports | None,
) -> Iterator[torch.Tensor]:
    """States 1..T-1 ``[M, C, H, W]`` of the batched formulation (views of fresh slot tensors, never
    modified after they are yielded). On a thread with spare intra-op threads (a lone rollout), each step's
    noise is drawn on a worker while the step before computes (``batching.NoiseAhead``; same numbers)."""
    engine = BatchedSteps(operator, noise_seeds, *first.shape[-2:])
    helpers = torch.get_num_threads()
    ahead = None
    if helpers > 1:
        pool = worker_pool(helpers)
        ahead = NoiseAhead(engine, steps - 1, lambda draw: submit_for_result(pool, draw))
    slots = engine.initial(first)
    for _ in range(1, steps):
        previous, slots = slots, torch.empty_like(slots)
        engine.advance(previous, slots, None if ahead is None else ahead.take())
        state = slots[: len(noise_seeds)]
        if report is not None:
            report.add(state)
        yield state
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
    operator: StochasticCNN,
    initial_condition: torch.Tensor,
    *,
    steps: int,
    noise_seeds: Sequence[int],
    formulation: str | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the ``steps`` states ``[M, C, H, W]`` of M = len(noise_seeds) realizations, starting at the IC.

    Realization m's noise comes only from ``noise_seeds[m]``, and its bits do not depend on M (see the
    module docstring); ``formulation`` defaults to :func:`default_formulation`. Yielded tensors are never
    modified afterwards.
    """
    formulation = formulation or default_formulation(operator.device)
    return _stream(operator, initial_condition, steps, noise_seeds, None, formulation)


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
        self, n_realizations: int, steps: int, channels: int, pool: WorkerPool | None, chunk_elements: int
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
            future = submit_for_result(self.pool, lambda: self._rows(chunk))
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
    formulation: str | None = None,
) -> RolloutRecord:
    """Roll out once, computing base series, digests and divergence inline (see the module docstring).
    ``formulation`` defaults to :func:`default_formulation`."""
    formulation = formulation or default_formulation(operator.device)
    initial_condition = torch.as_tensor(initial_condition)
    n_realizations, channels = len(noise_seeds), initial_condition.shape[0]
    hashes = [hashlib.sha256() for _ in range(n_realizations)]

    def hash_state(m: int, state: torch.Tensor) -> None:  # in step order for each m (on m's lane, if any)
        hashes[m].update(np.ascontiguousarray(state.cpu().numpy(), dtype="<f4").data)

    # F0 chunks go to the workers when the steps leave them free: the per-realization lanes, or a lone
    # batched rollout on a thread with spare intra-op threads (F0 rows do not depend on the thread).
    if formulation == "per_realization":
        workers = rollout_workers(n_realizations, operator.device)
    else:
        workers = torch.get_num_threads() if operator.device.type == "cpu" else 0
    pool = worker_pool(workers) if workers > 1 else None
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
    stream = _stream(operator, initial_condition, steps, noise_seeds, hash_state, formulation)
    for t, state in enumerate(stream):
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
