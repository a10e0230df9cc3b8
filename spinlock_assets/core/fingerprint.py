"""The execution fingerprint: what a rollout's exact bits depend on besides the seeds and inputs.

Measured here (torch 2.13 CPU, oneDNN, MKL): a single-threaded convolution's bits are identical across
processes, and at a fixed batch size across neighbours and slots, but not across batch sizes for every
shape, and MKL's matrix products (the narrow output layers) give other bits on other intra-op thread
counts (so the engine computes every rollout on one thread per batch or realization); they change with
the CPU capability torch dispatches to (``ATEN_CPU_CAPABILITY``) and with oneDNN disabled. On CUDA they
depend on the GPU model and the library versions. The engine's formulation is recorded too
(``formulation``: ``batched-<canonical batch>`` on the CPU, plus any layer shape whose start-up check fell
back to batch-1 convolutions, see ``core/batching.py``; ``per_realization`` on CUDA), so data made under
different formulations never compares as the same fingerprint. Replay under the same fingerprint must
reproduce a digest exactly; under another one verification classifies the result instead of passing or
failing silently.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata

__all__ = [
    "ENGINE_VERSION",
    "configure_determinism",
    "execution_fingerprint",
    "fingerprint_id",
    "inputs_fingerprint",
    "package_version",
]

# Version of the rollout engine's numerics (operator, policies, noise order, batching, digest). Bump on any
# change that alters a digest: stored digests then belong to the previous engine, and the code versions
# built from it mark base features and every family stale.
# 3.0.0: the CPU default is the batched formulation, every step on one intra-op thread
ENGINE_VERSION = "3.0.0"


def package_version() -> str:
    try:
        return metadata.version("spinlock_assets")
    except metadata.PackageNotFoundError:
        return "unknown"


def execution_fingerprint(device: str = "cpu") -> dict[str, str]:
    """A JSON-serialisable description of the numerics a rollout on ``device`` runs with."""
    import torch

    from .batching import formulation
    from .rollout import default_formulation

    device_type = torch.device(device).type
    fingerprint = {
        "torch": str(torch.__version__),
        "device_type": device_type,
        "dtype": "float32",
        "formulation": formulation(device) if default_formulation(device) == "batched" else "per_realization",
        "package": package_version(),
    }
    if device_type == "cuda":
        index = torch.device(device).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        fingerprint.update(
            gpu=str(torch.cuda.get_device_name(index)),
            compute_capability=f"{major}.{minor}",
            cuda=str(torch.version.cuda),
            cudnn=str(torch.backends.cudnn.version()),
        )
    else:
        fingerprint.update(
            cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
            mkldnn=str(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        )
    return fingerprint


def inputs_fingerprint() -> dict[str, str]:
    """What parameters and initial conditions are computed with: numpy and scipy on the host, whatever
    device the rollouts later run on (no torch is involved)."""
    return {
        "numpy": metadata.version("numpy"),
        "scipy": metadata.version("scipy"),
        "device_type": "cpu",
        "package": package_version(),
    }


def fingerprint_id(fingerprint: dict[str, str]) -> str:
    """Short stable identifier of a fingerprint (ignores the package version, which does not change bits
    by itself; a numerics change in the package bumps the family/engine versions instead)."""
    numerics = {k: v for k, v in fingerprint.items() if k != "package"}
    return hashlib.sha256(json.dumps(numerics, sort_keys=True).encode()).hexdigest()[:12]


def configure_determinism(device: str = "cpu") -> None:
    """Deterministic algorithms on, TF32 and cuDNN autotuning off. Idempotent; safe on CPU-only builds."""
    import os

    import torch

    if torch.device(device).type == "cuda":
        # cuBLAS needs a fixed workspace to be deterministic; must be set before the first cuBLAS call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=False)
