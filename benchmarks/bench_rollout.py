"""Rollout efficiency of the per-realization engine (CUDA's; the CPU default before ENGINE_VERSION 3.0.0)
against the conv-only lower bound of its batch-1 structure, and a profile breakdown. The CPU's batched
default is measured against its own ceilings by ``bench_engine.py``.

    python benchmarks/bench_rollout.py            # full run (about 10-20 minutes on the 2-core machine)
    python benchmarks/bench_rollout.py --quick    # smoke run: fewer operators and steps

At a 64x64 grid, C=3, M=5 realizations, T steps (default 32), for each operator it times, in one
process and interleaved (so load drifts hit every measure alike):

- (a) ``iterate_rollout`` consumed (the bare rollout),
- (b) ``run_rollout`` (the generation rollout: inline F0 base features + SHA-256 digests),
- (c) the conv-only lower bound: the operator's convolutions alone, the same layer shapes, inputs
  pre-padded, T-1 steps, batch 1 per realization and M of them per step (what the engine must do);
  (c') the same plus the operator's noise draws (``normal_`` into ``[1, width, H, W]`` per hidden layer,
  as the operator defines them: work no engine can skip without changing the operator);
  plus, for reference, the batch-M bound (the same convs batched; its bits may differ from batch 1) and
  the bound with the batch-1 convs shared out over the engine's worker threads (one intra-op thread each).

Reported: medians over ``--repeats`` repetitions per operator; ratios (a)/(c) and (b)/(a) for the total
of the sampled operators and for the smallest architectures alone. The measures run in a child process
(a fresh allocator and thread pool, whatever the parent did). Section 2 profiles the smallest operator's
generation rollout (torch.profiler) and splits its time by operation.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: _common is a sibling

import torch  # noqa: E402
from _common import (  # noqa: E402
    Case,
    available_parallelism,
    conv_bound,
    load_average,
    median,
    rollout_measures,
    sampled_cases,
    smallest_cases,
    timed,
    wall_and_cpu,
)

from spinlock_assets.core import rollout as rollout_module  # noqa: E402
from spinlock_assets.core.rollout import iterate_rollout, run_rollout  # noqa: E402

GRID, CHANNELS, REALIZATIONS = 64, 3, 5
MEASURES = ("bound", "bound_noise", "bound_serial", "bound_f_conv2d", "bound_batched", "bare", "generation")


def _engine_workers() -> int:
    """How many worker threads the engine steps realizations on (0: on the calling thread, as an engine
    without workers does)."""
    return int(getattr(rollout_module, "rollout_workers", lambda m: 0)(REALIZATIONS))


# ----------------------------------------------------------------------------------------------------
# Section 1: efficiency (runs in a child process, prints JSON)


def measure(cases: list[Case], steps: int, repeats: int) -> dict:
    workers = _engine_workers()
    parallelism = [available_parallelism()]
    fns = {}
    for case in cases:
        bare, generation = rollout_measures(case, steps)

        # (c) runs the convs in the engine's own thread structure: on `workers` threads with one intra-op
        # thread each when the engine has workers, else one after another on torch's intra-op threads.
        structured = functools.partial(conv_bound, case, steps, workers=max(workers, 1))
        fns[case.label] = {
            "bound": structured(),
            "bound_noise": structured(with_noise=True),
            "bound_serial": conv_bound(case, steps) if workers > 1 else None,
            "bound_f_conv2d": structured(engine_convs=False) if hasattr(case.operator, "convolve") else None,
            "bound_batched": conv_bound(case, steps, batched=True),
            "bare": bare,
            "generation": generation,
        }
    digests = {c.label: fns[c.label]["generation"]().digests for c in cases}  # also warms every path up
    for case in cases:
        for fn in fns[case.label].values():
            if fn is not None:
                fn()
    times: dict[str, dict[str, list[float]]] = {c.label: defaultdict(list) for c in cases}
    cpu_times: dict[str, dict[str, list[float]]] = {c.label: defaultdict(list) for c in cases}
    for _ in range(repeats):
        for case in cases:
            for name in MEASURES:
                fn = fns[case.label][name]
                if fn is not None:
                    wall, cpu = wall_and_cpu(fn)
                    times[case.label][name].append(wall)
                    cpu_times[case.label][name].append(cpu)
        parallelism.append(available_parallelism())
    return {
        "available_parallelism": parallelism,
        "torch_threads": torch.get_num_threads(),
        "engine_workers": workers,
        "steps": steps,
        "load_average": load_average(),
        "cases": [
            {
                "label": c.label,
                "architecture": c.architecture,
                "gflop": c.conv_flops_per_step() * (steps - 1) / 1e9,
                "median_s": {k: median(v) for k, v in times[c.label].items()},
                "median_cpu_s": {k: median(v) for k, v in cpu_times[c.label].items()},
                "digests": digests[c.label],
            }
            for c in cases
        ],
    }


def invariance_checks(cases: list[Case], steps: int) -> dict:
    """Bits at 64x64: digests with torch threads 1 vs 2, and each realization alone vs with the others."""
    threads_equal, alone_equal = True, True
    previous = torch.get_num_threads()
    for case in cases:
        ic = torch.as_tensor(case.initial_condition)
        digests = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            digests[threads] = run_rollout(
                case.operator, ic, steps=steps, noise_seeds=case.noise_seeds
            ).digests
        torch.set_num_threads(previous)
        threads_equal &= digests[1] == digests[2]
        for m, seed in enumerate(case.noise_seeds):
            alone = run_rollout(case.operator, ic, steps=steps, noise_seeds=[seed]).digests[0]
            alone_equal &= alone == digests[2][m]
    return {"threads_1_vs_2": threads_equal, "alone_vs_batched": alone_equal}


def child_main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    sample = sampled_cases(args.operators, channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    small = smallest_cases(channels=CHANNELS, grid=GRID, realizations=REALIZATIONS)
    if args.smallest_only:
        sample = []
    result = measure(sample + small, args.steps, args.repeats)
    result.update(n_sample=len(sample), invariance=invariance_checks(small, min(args.steps, 8)))
    result["breakdown"] = breakdown(small[0], args.steps) | {"steps": args.steps}
    result["op_costs"] = op_costs(small[0], args.steps)
    print(json.dumps(result))


# ----------------------------------------------------------------------------------------------------
# Section 2: profile breakdown of one operator


_CATEGORIES = [
    ("conv", ("conv", "mkldnn_convolution")),
    ("pad (circular)", ("pad", "_pad_circular")),
    ("instance norm", ("instance_norm", "group_norm", "batch_norm", "var_mean", "rsqrt")),
    ("activation", ("gelu", "tanh", "silu", "relu")),
    ("noise normal_", ("normal_",)),
    ("noise add_", ("add_",)),
    ("policy update", ("lerp", "aten::add", "aten::mul")),
    ("torch.cat / stack", ("aten::cat", "aten::stack")),
    ("copies", ("copy_", "aten::contiguous", "aten::expand", "aten::to", "aten::clone")),
]


def _category(name: str) -> str:
    if name.startswith("bench::"):
        return name.removeprefix("bench::")
    for category, keys in _CATEGORIES:
        if any(key == name or (not key.startswith("aten::") and key in name) for key in keys):
            return category
    return f"other ({name})"


class _TimedHash:
    """A hashlib object whose updates show up in the profile as ``bench::digest SHA-256``."""

    def __init__(self, real):
        self._real = real

    def update(self, data) -> None:
        with torch.profiler.record_function("bench::digest SHA-256"):
            self._real.update(data)

    def hexdigest(self) -> str:
        return self._real.hexdigest()


class _HashlibShim:
    def __init__(self, real):
        self._real = real

    def sha256(self, *args):
        return _TimedHash(self._real.sha256(*args))


def op_costs(case: Case, steps: int) -> dict:
    """CPU microseconds per realization-step of each operation the engine performs for ``case``, each op
    timed alone (thread CPU time, one intra-op thread, the shapes of the engine), next to the engine's
    own CPU time per realization-step. Thread CPU time is hardly disturbed by other processes, unlike
    wall time or a profile's event durations. Mirrors ``StochasticCNN.apply``/``update`` and
    ``run_rollout``: update this when they change.
    """
    import hashlib

    import numpy as np
    import torch.nn.functional as F

    from spinlock_assets.core.features.base import step_features
    from spinlock_assets.core.operator import GeneratorNoise, _activation

    try:
        from spinlock_assets.core.operator import _instance_norm
    except ImportError:  # an engine from before group_norm
        _instance_norm = functools.partial(F.instance_norm, eps=1.0)

    op, hp = case.operator, case.hp
    pad = hp.kernel_size // 2
    c, h, w = case.initial_condition.shape
    m = len(case.noise_seeds)
    x = torch.as_tensor(case.initial_condition)[None].clone()
    hidden = torch.randn(1, hp.width, h, w)
    noise = GeneratorNoise(0, op.device)
    activation = _activation(hp.activation)

    def each(fn, n=30):
        fn()
        samples = []
        for _ in range(5):
            start = time.thread_time()
            for _ in range(n):
                fn()
            samples.append((time.thread_time() - start) / n * 1e6)
        return median(samples)

    costs: dict[str, float] = defaultdict(float)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inputs = [x] + [hidden] * (hp.n_layers - 1)
        for layer, (inp, weight) in enumerate(zip(inputs, op.weights, strict=True)):
            padded = F.pad(inp, (pad,) * 4, mode="circular")
            costs["pad (circular)"] += each(lambda inp=inp: F.pad(inp, (pad,) * 4, mode="circular"))
            bias = op.output_bias if layer == hp.n_layers - 1 else None
            if hasattr(op, "convolve"):
                costs["conv"] += each(lambda p=padded, layer=layer: op.convolve(layer, p))
            else:
                costs["conv"] += each(lambda p=padded, wt=weight, b=bias: F.conv2d(p, wt, b))
        n_hidden = hp.n_layers - 1
        costs["instance norm"] = n_hidden * each(lambda: _instance_norm(hidden))
        costs["activation"] = n_hidden * each(lambda: activation(hidden))
        costs["noise normal_"] = n_hidden * each(lambda: noise(0, hidden))
        costs["noise add_"] = n_hidden * each(lambda: hidden.add_(noise._buffer, alpha=hp.noise_sigma))
        out = torch.empty_like(x)
        try:
            costs["policy update"] = each(lambda: op.update(x, x, out=out))
        except TypeError:  # an engine from before update(out=)
            costs["policy update"] = each(lambda: op.update(x, x))
        chunk = [torch.randn(m, c, h, w) for _ in range(2)]
        per_state = 1.0 / (len(chunk) * m)
        stacked = torch.stack(chunk, dim=1).reshape(-1, c, h, w)
        costs["F0: torch.stack of a chunk"] = per_state * each(lambda: torch.stack(chunk, dim=1), 10)
        costs["F0: step_features"] = per_state * each(lambda: step_features(stacked), 10)
        state = np.ascontiguousarray(case.initial_condition)
        costs["digest SHA-256"] = each(lambda: hashlib.sha256(state.data), 100)

        def bare_fn():
            for _ in iterate_rollout(op, x[0], steps=steps, noise_seeds=case.noise_seeds):
                pass

        def gen_fn():
            run_rollout(op, x[0], steps=steps, noise_seeds=case.noise_seeds)

        per_step = 1e6 / (m * (steps - 1))
        bare = median([_cpu_timed(bare_fn) for _ in range(5)]) * per_step
        generation = median([_cpu_timed(gen_fn) for _ in range(5)]) * per_step
    finally:
        torch.set_num_threads(previous)
    return {
        "label": case.label,
        "architecture": case.architecture,
        "ops_us": dict(costs),
        "bare_us": bare,
        "generation_us": generation,
    }


def breakdown(case: Case, steps: int, repeats: int = 5) -> dict:
    """Time split of one generation rollout by operation, from torch.profiler over all threads.

    Each top-level event (an op called from Python, or a ``bench::`` range wrapping base features or
    hashing) is charged to its category with its whole duration. What the process spent on the CPU
    beyond those events is Python and thread hand-offs. The profiler adds a few microseconds per op, so
    the profiled run is slower than the unprofiled one (both reported).
    """
    ic = torch.as_tensor(case.initial_condition)

    def run():
        return run_rollout(case.operator, ic, steps=steps, noise_seeds=case.noise_seeds)

    run()
    wall = median([timed(run) for _ in range(repeats)])
    cpu = median([_cpu_timed(run) for _ in range(repeats)])

    real_features, real_hashlib = rollout_module.step_features, rollout_module.hashlib

    def features(states):
        with torch.profiler.record_function("bench::base features (F0)"):
            return real_features(states)

    rollout_module.step_features, rollout_module.hashlib = features, _HashlibShim(real_hashlib)
    operator_class = type(case.operator)
    real_convolve = getattr(operator_class, "convolve", None)
    if real_convolve is not None:  # the engine's convs include products and adds: label them as a whole

        def convolve(self, layer, padded):
            with torch.profiler.record_function("bench::conv"):
                return real_convolve(self, layer, padded)

        operator_class.convolve = convolve
    try:
        config = torch._C._profiler._ExperimentalConfig(
            profile_all_threads=True
        )  # the engine's worker threads too
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], experimental_config=config
        ) as prof:
            start_cpu = time.process_time()
            profiled_wall = timed(run)
            profiled_cpu = time.process_time() - start_cpu
    finally:
        rollout_module.step_features, rollout_module.hashlib = real_features, real_hashlib
        if real_convolve is not None:
            operator_class.convolve = real_convolve

    by_category: dict[str, float] = defaultdict(float)
    busy_by_thread: dict[int, float] = defaultdict(float)
    for event in prof.events():
        if event.cpu_parent is not None:
            continue
        duration = event.time_range.elapsed_us() / 1e6
        by_category[_category(event.name)] += duration
        busy_by_thread[event.thread] += duration
    return {
        "label": case.label,
        "architecture": case.architecture,
        "wall_s": wall,
        "cpu_s": cpu,
        "profiled_wall_s": profiled_wall,
        "profiled_cpu_s": profiled_cpu,
        "busy_by_thread_s": sorted(busy_by_thread.values(), reverse=True),
        "by_category_s": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
    }


def _cpu_timed(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


# ----------------------------------------------------------------------------------------------------
# Parent: run the children, print the tables


def run_child(args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--operators",
        str(args.operators),
        "--threads",
        str(args.threads),
    ] + (["--smallest-only"] if args.smallest_only else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"child failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.1f}"


def print_efficiency(result: dict) -> None:
    workers = result["engine_workers"]
    parallelism = " ".join(f"{x:.2f}" for x in result["available_parallelism"])
    structure = (
        f"{workers} worker threads, one intra-op thread each"
        if workers
        else f"{result['torch_threads']} intra-op threads"
    )
    print(
        f"torch threads {result['torch_threads']}, engine: {structure}, T={result['steps']} steps, "
        f"load average at the end: {result['load_average']}\n"
        f"available parallelism (2 threads vs 1 on matmuls, before/after each repetition): {parallelism}\n"
        "wall ms (medians). (c): the engine's convs alone in its thread structure; serial: the same on\n"
        "torch's intra-op threads, one realization after another; F.conv2d: (c) with F.conv2d for\n"
        "every layer; +noise (c'): (c) plus the operator's noise draws (normal_, as defined); "
        "batch-M: one batched conv per layer. 'cpu': ratios of process CPU time (all threads)."
    )
    print(
        f"{'op':7} {'architecture':26} {'GFLOP':>6} {'(c) bound':>9} {'+noise':>9} {'serial':>9} "
        f"{'F.conv2d':>9} {'batch-M':>9} "
        f"{'(a) bare':>9} {'(b) gen':>9} {'a/c':>6} {'b/a':>6} {'a/c cpu':>7} {'b/a cpu':>7} {'c GF/s':>7}"
    )

    def cell(times: dict, name: str) -> str:
        return _ms(times[name]) if name in times else f"{'-':>9}"

    for case in result["cases"]:
        t, cpu = case["median_s"], case["median_cpu_s"]
        print(
            f"{case['label']:7} {case['architecture']:26} {case['gflop']:6.1f} {_ms(t['bound'])} "
            f"{cell(t, 'bound_noise')} "
            f"{cell(t, 'bound_serial')} {cell(t, 'bound_f_conv2d')} {cell(t, 'bound_batched')} "
            f"{_ms(t['bare'])} {_ms(t['generation'])} {t['bare'] / t['bound']:6.2f} "
            f"{t['generation'] / t['bare']:6.3f} {cpu['bare'] / cpu['bound']:7.2f} "
            f"{cpu['generation'] / cpu['bare']:7.3f} {case['gflop'] / t['bound']:7.1f}"
        )
    n_sample = result["n_sample"]
    for name, group, target in (
        (f"(i) total over the {n_sample} sampled operators", result["cases"][:n_sample], 1.10),
        ("(ii) smallest architectures (w16 k3, 2-3 layers)", result["cases"][n_sample:], 1.5),
    ):
        if not group:
            continue
        total = {k: sum(c["median_s"].get(k, 0.0) for c in group) for k in MEASURES}
        cpu = {k: sum(c["median_cpu_s"].get(k, 0.0) for c in group) for k in MEASURES}
        print(
            f"{name}:\n    (a)/(c) = {total['bare'] / total['bound']:.3f} (target <= {target}), "
            f"(b)/(a) - 1 = {100 * (total['generation'] / total['bare'] - 1):+.1f}% (target <= 2%); "
            f"on CPU time: (a)/(c) = {cpu['bare'] / cpu['bound']:.3f}, "
            f"(b)/(a) - 1 = {100 * (cpu['generation'] / cpu['bare'] - 1):+.1f}%"
        )
        others = [
            (label, total["bare"] / total[key])
            for label, key in (
                ("conv + noise (c')", "bound_noise"),
                ("serial", "bound_serial"),
                ("F.conv2d", "bound_f_conv2d"),
                ("batch-M", "bound_batched"),
            )
            if total[key]
        ]
        print(
            "    (a) over the other bounds: " + ", ".join(f"{label} {ratio:.3f}" for label, ratio in others)
        )


def print_breakdown(b: dict) -> None:
    print(
        f"{b['label']} ({b['architecture']}), T={b.get('steps', '?')}: "
        f"unprofiled wall {b['wall_s'] * 1e3:.1f} ms, "
        f"CPU {b['cpu_s'] * 1e3:.1f} ms; profiled wall {b['profiled_wall_s'] * 1e3:.1f} ms, "
        f"CPU {b['profiled_cpu_s'] * 1e3:.1f} ms; torch ops on {len(b['busy_by_thread_s'])} thread(s), busy "
        + ", ".join(f"{s * 1e3:.1f}" for s in b["busy_by_thread_s"])
        + " ms"
    )
    busy = sum(b["busy_by_thread_s"])
    rest = max(0.0, b["profiled_cpu_s"] - busy)
    rows = [(k, v) for k, v in b["by_category_s"].items() if not k.startswith("other")]
    others = sum(v for k, v in b["by_category_s"].items() if k.startswith("other"))
    rows += [("other torch ops (views, empty, ...)", others), ("Python, thread hand-offs (CPU - ops)", rest)]
    total = busy + rest
    print("  share of the profiled run's CPU time:")
    for name, seconds in rows:
        print(f"  {name:44} {seconds * 1e3:8.1f} ms  {100 * seconds / total:5.1f}%")


def print_op_costs(costs: dict) -> None:
    ops = costs["ops_us"]
    step_ops = {k: v for k, v in ops.items() if not k.startswith(("F0", "digest"))}
    inline_ops = {k: v for k, v in ops.items() if k.startswith(("F0", "digest"))}
    rest = costs["bare_us"] - sum(step_ops.values())
    print(
        f"{costs['label']} ({costs['architecture']}), one intra-op thread, CPU us per realization-step: "
        f"engine bare {costs['bare_us']:.0f}, generation {costs['generation_us']:.0f}"
    )
    rows = list(step_ops.items()) + [("Python, scheduling (bare - ops above)", rest)]
    for name, us in rows:
        print(f"  {name:44} {us:8.1f} us  {100 * us / costs['bare_us']:5.1f}% of bare")
    extra = costs["generation_us"] - costs["bare_us"]
    print(
        f"  {'inline work (generation - bare)':44} {extra:8.1f} us  "
        f"{100 * extra / costs['bare_us']:5.1f}% of bare, of which:"
    )
    for name, us in inline_ops.items():
        print(f"    {name:42} {us:8.1f} us  {100 * us / costs['bare_us']:5.1f}% of bare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 operators, 16 steps, 3 repeats")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--operators", type=int, default=16, help="sampled operators (>= 16 for the report)")
    parser.add_argument("--smallest-only", action="store_true", help="time only the smallest architectures")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads in the children (0: default)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.operators, args.steps, args.repeats = 8, 16, 3
    if args.child:
        child_main(args)
        return

    print(f"load average at start: {load_average()}")
    result = run_child(args)
    print(
        f"\n== 1. Rollout efficiency vs the conv-only lower bound "
        f"({GRID}x{GRID}, C={CHANNELS}, M={REALIZATIONS})"
    )
    print_efficiency(result)
    print(f"\nbits at 64x64 (smallest operators): {result['invariance']}")
    print("\n== 2. Breakdown of the smallest operator's step: each op timed alone (thread CPU time)")
    print_op_costs(result["op_costs"])
    print("\n   ... and its generation rollout as the engine runs it (torch.profiler, all threads)")
    print_breakdown(result["breakdown"])
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
