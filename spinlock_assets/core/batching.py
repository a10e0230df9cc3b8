"""The batched formulation of the rollout engine: all M realizations of an operator stepped as one batch.

oneDNN picks its convolution algorithm by shape, batch size included (3->16 channels, 3x3, 64x64: batch 1
gave other bits than batches 2-40), but at a *fixed* batch size a sample's output bits depend neither on
its neighbours nor on its slot (``environment.md``). So every convolution runs at a **canonical batch
size** decided by the layer shape alone (:func:`canonical_batch`): the M realizations fill
``ceil(M / B) * B`` slots, the unused ones hold zeros, and each chunk of B slots is one convolution call.
Realization m's bits are then independent of M, of which realizations share its batch and of its slot, by
construction, provided every op of a step is per-sample invariant:

- convolutions at the canonical batch: checked per layer shape when first used in a process
  (:func:`batch_invariant`: a probe alone in slot 0 with zero neighbours against the same probe in other
  slots with random neighbours); a shape that fails runs its convolution sample by sample (batch 1, the
  per-realization formulation's arithmetic), and :func:`formulation` (part of the execution fingerprint)
  names it. Narrow layers (the output layer) are per-sample GEMMs and exact adds, invariant by
  construction (``operator._narrow_conv``), and are checked all the same;
- circular padding: copies;
- instance norm (``F.group_norm``): each (sample, channel) row is reduced on its own, in an order that
  depends only on H*W;
- activation, noise add, policy update: elementwise ops whose vectorised body and scalar tail round alike
  (silu is computed through tanh for that, see ``operator._silu``), so their bits do not depend on a
  sample's offset in the tensor nor on how threads split it;
- noise: realization m draws each hidden layer's noise ``[width, H, W]`` from its own generator into its
  own slot, in the same order as ``GeneratorNoise`` (per step, per hidden layer): the same numbers.

Threads: every step runs on one intra-op thread (:func:`one_intra_op_thread`), whatever the caller's count:
MKL's matrix products in the narrow layers round differently on other thread counts (a one-channel output
layer changed digests between 1, 2 and 3 threads when the step ran on them), so a step on the caller's
threads would give a Celery worker on one thread and a notebook on two different bits. The cores are used
across operators instead (``rollout.operators_at_once``). The noise draws (``normal_`` with a generator is
single-threaded) run on that thread too, one realization after another; a lone rollout on a thread with
spare intra-op threads draws them one step ahead on a worker instead (:class:`NoiseAhead`, same numbers).

Throughput on this 2-core CPU (``benchmarks/bench_engine.py``): single-threaded, a batch of 5 convolves
little faster per sample than batch 1 does (oneDNN's batch-1 kernels already keep one core busy on these
shapes), so the gain over the per-realization engine is the rest of the step done once per batch:
1.04-1.06x over the 16 sampled operators, 1.30-1.40x on the 4 smallest (targets 1.5x and 2x). The ceiling on
these cores, with convolutions at the canonical batch and the noise draws alone (nothing else of the step), is
1.36x over the sample: the noise, part of each operator's definition, costs 17-35% of a step.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import torch
import torch.nn.functional as F

from .operator import StochasticCNN, conv_layer

__all__ = [
    "CANONICAL_BATCH",
    "BatchedSteps",
    "NoiseAhead",
    "batch_invariant",
    "canonical_batch",
    "formulation",
    "one_intra_op_thread",
]

# The canonical batch size of every layer shape: the default dataset's M, so its realizations fill one
# batch with no unused slot (padding M=5 to 8 would spend 3/8 of every convolution on zeros).
CANONICAL_BATCH = 5

_checked: dict[tuple, bool] = {}  # (layer shape, batch, device type) -> batch-invariant
_checked_lock = threading.Lock()


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Torch ops of the calling thread run on one intra-op thread inside (OpenMP's and MKL's counts are
    per thread; the caller's count is put back on exit). A batched step runs inside, so its bits cannot
    depend on the caller's thread count: MKL's matrix products round differently on other counts."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def canonical_batch(in_channels: int, out_channels: int, kernel: int, height: int, width: int) -> int:
    """The batch size every convolution of this shape runs at (a function of the shape alone; today the
    same for every shape, see ``CANONICAL_BATCH``)."""
    return CANONICAL_BATCH


def batch_invariant(
    in_channels: int,
    out_channels: int,
    kernel: int,
    height: int,
    width: int,
    *,
    bias: bool,
    device: torch.device | str = "cpu",
) -> bool:
    """Whether the engine's convolution of this shape at its canonical batch, on one intra-op thread, gives a
    sample the same bits in every slot, whatever its neighbours (cached per process).

    A probe input alone in slot 0 with zero neighbours is compared with the same probe in the middle and
    last slots among random neighbours; weights and inputs come from a fixed seed.
    """
    device = torch.device(device)
    batch = canonical_batch(in_channels, out_channels, kernel, height, width)
    key = (
        in_channels,
        out_channels,
        kernel,
        height,
        width,
        bias,
        batch,
        device.type,
    )
    with _checked_lock:
        if key in _checked:
            return _checked[key]
    generator = torch.Generator().manual_seed(0)
    shape = (in_channels, height + kernel - 1, width + kernel - 1)
    weight = torch.randn(out_channels, in_channels, kernel, kernel, generator=generator)
    weight = weight.div_(math.sqrt(in_channels * kernel * kernel)).to(device)
    offsets = torch.randn(out_channels, generator=generator).to(device) if bias else None
    probe = torch.randn(shape, generator=generator).to(device)
    alone = torch.zeros((batch, *shape), device=device)
    alone[0] = probe
    with one_intra_op_thread():  # as the engine runs it
        expected = conv_layer(alone, weight, offsets)[0]
        invariant = True
        for slot in sorted({batch // 2, batch - 1}):
            crowd = torch.randn((batch, *shape), generator=generator).to(device)
            crowd[slot] = probe
            invariant &= torch.equal(conv_layer(crowd, weight, offsets)[slot], expected)
    with _checked_lock:
        _checked[key] = invariant
    return invariant


def formulation(device: torch.device | str = "cpu") -> str:
    """The engine's formulation on ``device``, for the execution fingerprint: ``batched-<B>`` on the CPU,
    followed by the layer shapes checked so far in this process that fell back to batch-1 convolutions
    (``in>out kK HxW``); ``per_realization`` elsewhere (CUDA steps each realization alone)."""
    if torch.device(device).type != "cpu":
        return "per_realization"
    with _checked_lock:
        fallbacks = sorted({key[:6] for key, ok in _checked.items() if not ok and key[-1] == "cpu"})
    described = [f"{i}>{o} k{k} {h}x{w}{' +bias' if b else ''}" for i, o, k, h, w, b in fallbacks]
    return ";".join([f"batched-{CANONICAL_BATCH}", *(f"batch-1 {d}" for d in described)])


class BatchedSteps:
    """Steps the M realizations of one operator together, every convolution at its canonical batch.

    States live in ``[S, C, H, W]`` tensors with ``S = ceil(M / B) * B`` slots: realization m in slot m,
    zeros in slots ``M..S-1`` (re-zeroed after every step, so the convolutions always see zero
    neighbours there). Each realization draws its noise from its own generator, seeded from
    ``noise_seeds[m]``, into its own slot of per-layer buffers ``[S, width, H, W]``.
    """

    def __init__(self, operator: StochasticCNN, noise_seeds: Sequence[int], height: int, width: int) -> None:
        self.operator = operator
        self.n_realizations = len(noise_seeds)
        device = operator.device
        weights = operator.weights
        # One slot layout serves every layer because canonical_batch is the same for every shape today; a
        # per-shape size would re-chunk the slots between layers.
        self.batch = canonical_batch(*weights[0].shape[:2][::-1], weights[0].shape[-1], height, width)
        self.slots = -(-self.n_realizations // self.batch) * self.batch
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in noise_seeds]
        self.noise = [
            torch.zeros((self.slots, w.shape[0], height, width), device=device) for w in weights[:-1]
        ]
        last = len(weights) - 1
        self.batched = [
            batch_invariant(
                w.shape[1], w.shape[0], w.shape[-1], height, width, bias=layer == last, device=device
            )
            for layer, w in enumerate(weights)
        ]

    def initial(self, first: torch.Tensor) -> torch.Tensor:
        """The slot tensor ``[S, C, H, W]`` of state 0 from the realizations' states ``[M, C, H, W]``."""
        x = torch.zeros((self.slots, *first.shape[1:]), dtype=first.dtype, device=first.device)
        x[: self.n_realizations] = first
        return x

    def advance(self, x: torch.Tensor, out: torch.Tensor, noise: list[torch.Tensor] | None = None) -> None:
        """One step of every realization: slots ``x`` ``[S, C, H, W]`` -> ``out`` (same shape). ``noise``:
        this step's noise buffers, already drawn (:class:`NoiseAhead`); by default drawn here."""
        with one_intra_op_thread():
            if noise is None:
                noise = self.draw_noise()
            operator = self.operator
            o = operator.apply(x, lambda layer, like: noise[layer], convolve=self._convolve)
            operator.update(x, o, out=out)
            out[self.n_realizations :] = 0

    def draw_noise(self, buffers: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Fill one step's noise buffers (``self.noise`` by default; unused slots stay zero): per realization,
        layer 0, 1, ... as ``GeneratorNoise`` does. Returns them."""
        buffers = self.noise if buffers is None else buffers
        for m, generator in enumerate(self.generators):
            for layer_noise in buffers:
                layer_noise[m].normal_(generator=generator)
        return buffers

    def _convolve(self, layer: int, padded: torch.Tensor) -> torch.Tensor:
        """Convolution ``layer`` of the padded slots ``[S, in, H+k-1, W+k-1]``, chunk by chunk of the
        canonical batch (each chunk a tensor of its own, as the start-up check ran it), or sample by sample
        for a shape that failed the check."""
        outputs = []
        for start in range(0, self.slots, self.batch):
            chunk = padded if self.slots == self.batch else padded[start : start + self.batch].clone()
            if self.batched[layer]:
                outputs.append(self.operator.convolve(layer, chunk))
                continue
            active = min(self.batch, self.n_realizations - start)
            single = [self.operator.convolve(layer, chunk[b : b + 1].clone()) for b in range(active)]
            outputs.append(F.pad(torch.cat(single), (0, 0, 0, 0, 0, 0, 0, self.batch - active)))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class NoiseAhead:
    """Draws the next step's noise on a worker while this step computes: for a rollout on a thread with
    spare intra-op threads (a lone rollout; within ``roll_out`` every worker is busy with an operator).

    The draws are the ones :meth:`BatchedSteps.draw_noise` makes, in the same order from the same
    generators (one step's draws finish before the next step's start, and only one thread uses the
    generators at a time), into two alternating buffer sets: the bits do not change, only when the numbers
    are drawn. ``steps`` draws are made, no more (a generator is never advanced past the rollout's end).
    """

    def __init__(
        self, engine: BatchedSteps, steps: int, submit: Callable[[Callable[[], object]], Future]
    ) -> None:
        self.engine, self.submit, self.remaining = engine, submit, steps
        self.buffers = [engine.noise, [torch.zeros_like(b) for b in engine.noise]]
        self.pending: Future | None = None
        self.pending_index = 0
        self._draw_next(0)

    def _draw_next(self, index: int) -> None:
        if self.remaining == 0:
            self.pending = None
            return
        self.remaining -= 1
        buffers = self.buffers[index]
        self.pending, self.pending_index = self.submit(lambda: self.engine.draw_noise(buffers)), index

    def take(self) -> list[torch.Tensor]:
        """This step's noise buffers (once drawn); starts the next step's draws into the other set."""
        if self.pending is None:
            raise RuntimeError("every step's noise has been taken")
        buffers, index = self.pending.result(), self.pending_index
        self._draw_next(1 - index)
        return buffers
