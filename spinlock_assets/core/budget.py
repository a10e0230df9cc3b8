"""Resource estimates of a spec, checked against this machine before any work starts.

A spec can be valid and still impossible here: ``grid [100000, 100000]`` or ``steps 1e9`` would only fail
on allocation, after minutes of work or with a MemoryError traceback. The estimates are deliberately
simple upper-bound-ish figures (float32 everywhere):

- memory of one rollout kept whole (replays that feed derived families keep every state):
  ``M·T·C·H·W`` states plus the widest layer's activations ``4·width·H·W`` (input, output and two
  temporaries), plus the F0 series;
- disk of one shard: the base series and summary, digests, the ICs when stored and the trajectories
  when stored, per operator, times ``shard_size``.

A third estimate, of time, sizes Dagster runs (``estimated_operator_seconds``): the generation of one
operator on a CPU, from the spec's mean architecture; it only has to be right within a factor of ~2.

Memory and disk are compared with the machine's physical memory (``os.sysconf``) and the free space of the
data root's file system (``shutil.disk_usage``); a spec that does not fit is refused with a ``SpecError``
naming the fields and giving the numbers. Memory is checked where the definitions are built; disk, which
changes, by the main job before its runs (a full disk must not stop the code location from loading).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .spec import DatasetSpec, SpecError

__all__ = [
    "check_disk",
    "check_memory",
    "estimated_operator_seconds",
    "physical_memory_bytes",
    "rollout_bytes",
    "shard_bytes",
]

_FLOAT = 4
_SERIES_COLUMNS = 10
_SUMMARY_VALUES = 30 * 2
_DIGEST = 64
_GiB = 1 << 30
# Part of the physical memory one rollout may take: the interpreter, torch and the other runs of a
# backfill need the rest.
MEMORY_SHARE = 0.5


def rollout_bytes(spec: DatasetSpec) -> int:
    """Estimated peak memory of one rollout whose trajectories are kept (replay for derived families)."""
    h, w, c, t, m = spec.height, spec.width, spec.channels, spec.steps, spec.realizations
    states = m * t * c * h * w
    activations = 4 * max(max(spec.parameter_space.widths), c) * h * w
    return _FLOAT * (states + activations + m * t * c * _SERIES_COLUMNS)


def shard_bytes(spec: DatasetSpec) -> int:
    """Estimated size of one shard's files (base features, ICs and trajectories as the spec stores them)."""
    h, w, c, t, m = spec.height, spec.width, spec.channels, spec.steps, spec.realizations
    per_operator = _FLOAT * (m * t * c * _SERIES_COLUMNS + c * _SUMMARY_VALUES) + m * _DIGEST
    if spec.store_initial_conditions:
        per_operator += _FLOAT * c * h * w
    if spec.store_trajectories:
        per_operator += _FLOAT * m * t * c * h * w
    return per_operator * spec.shard_size


# Generation time of one operator = per operator + M*T * (per realization-step + per conv MAC). Fitted
# on the 2-core benchmark machine (2 torch threads, oneDNN) to direct generation (parameters, ICs,
# rollout with inline features, writes) of three specs: 8x8 C=1 T=4 M=1 (3.9 ms/op), 32x32 C=3 T=16 M=2
# 2x16x3 (21.9 ms/op) and the default spec (296 ms/op).
_SECONDS_PER_OPERATOR = 1.5e-3
_SECONDS_PER_REALIZATION_STEP = 0.6e-3
_SECONDS_PER_MAC = 1.6e-11


def estimated_operator_seconds(spec: DatasetSpec) -> float:
    """Estimated CPU seconds to generate one operator of ``spec``, at the parameter space's mean
    architecture (mean layer count, mean squared width, mean squared kernel size)."""
    space = spec.parameter_space
    layers = sum(space.n_layers) / 2
    width = sum(space.widths) / len(space.widths)
    width_squared = sum(w * w for w in space.widths) / len(space.widths)
    taps = sum(k * k for k in space.kernel_sizes) / len(space.kernel_sizes)
    # sizes [C, w, ..., w, C]: two convs C<->w and (layers - 2) convs w->w
    macs_per_pixel = taps * (2 * spec.channels * width + max(layers - 2, 0) * width_squared)
    macs_per_step = macs_per_pixel * spec.height * spec.width
    steps = spec.realizations * spec.steps
    return _SECONDS_PER_OPERATOR + steps * (_SECONDS_PER_REALIZATION_STEP + _SECONDS_PER_MAC * macs_per_step)


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(spec: DatasetSpec, *, available: int | None = None) -> None:
    """Refuse a spec one rollout of which would not fit in ``MEMORY_SHARE`` of this machine's memory."""
    available = physical_memory_bytes() if available is None else available
    needed = rollout_bytes(spec)
    if needed > MEMORY_SHARE * available:
        fields = "grid, channels, steps, realizations, parameter_space.widths"
        sizes = {
            "grid": list(spec.grid),
            "channels": spec.channels,
            "steps": spec.steps,
            "realizations": spec.realizations,
            "parameter_space.widths": list(spec.parameter_space.widths),
        }
        raise SpecError(
            fields,
            f"small enough for one rollout to fit in memory: it needs about {needed / _GiB:,.1f} GiB "
            f"(M*T*C*H*W float32 states plus activations), this machine has {available / _GiB:,.1f} GiB "
            f"of which one rollout may use {MEMORY_SHARE:.0%}",
            sizes,
        )


def check_disk(spec: DatasetSpec, data_root: str | os.PathLike[str], *, free: int | None = None) -> None:
    """Refuse a spec one shard of which would not fit on the data root's file system."""
    if free is None:
        existing = Path(data_root).absolute()
        while not existing.exists():  # the root may not exist yet: ask its file system
            existing = existing.parent
        free = shutil.disk_usage(existing).free
    needed = shard_bytes(spec)
    if needed > free:
        raise SpecError(
            "shard_size, grid, channels, steps, realizations",
            f"small enough for one shard to fit on disk: it needs about {needed / _GiB:,.2f} GiB, "
            f"{data_root} has {free / _GiB:,.2f} GiB free",
            {"shard_size": spec.shard_size, "grid": list(spec.grid), "steps": spec.steps},
        )
