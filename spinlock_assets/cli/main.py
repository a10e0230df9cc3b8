"""The ``spinlock-assets`` command: describe a dataset, replay one operator, verify many.

    spinlock-assets info PATH [--json]
    spinlock-assets replay PATH --operator I [--output FILE.npy|FILE.h5] [--device cpu] [--force]
    spinlock-assets verify PATH [--operators 0:100|3,5,9] [--sample K [--seed S]] [--all-files] [--device cpu]
                                [--json]

PATH is ``dataset.h5`` or the data folder holding it. Exit codes: 0 success; 1 the command ran and found
a problem (a replay that is not exact, an integrity problem, a file failing validation); 2 bad input,
reported as one line ``spinlock-assets: error: <message>`` on stderr (``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import h5py
import numpy as np

from spinlock_assets.cli.replay import Replayer
from spinlock_assets.core.budget import check_memory
from spinlock_assets.core.fingerprint import fingerprint_id
from spinlock_assets.core.verification import STATUSES
from spinlock_assets.storage.atomic import atomic_output, publish_hdf5
from spinlock_assets.storage.errors import StorageError
from spinlock_assets.storage.integrity import check_dataset
from spinlock_assets.storage.layout import DATASET_FILE, Problem, decode_attr, encode_attr
from spinlock_assets.storage.reader import DatasetReader, open_dataset
from spinlock_assets.storage.validation import validate_dataset_file

if TYPE_CHECKING:
    from spinlock_assets.core.verification import Verification

__all__ = ["CliError", "build_parser", "main", "parse_operators"]

PROG = "spinlock-assets"


class CliError(Exception):
    """Bad input to a command; :func:`main` prints it as one line and returns 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block and exit; raise so every error is one line via main().
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Inspect, replay and verify spinlock operator datasets.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,replay,verify}")
    path_help = "dataset.h5, or the data folder holding it"

    info = commands.add_parser("info", help="what a dataset holds, and whether it passes validation")
    info.add_argument("path", type=Path, help=path_help)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info_command)

    replay = commands.add_parser("replay", help="replay one operator and save its trajectories")
    replay.add_argument("path", type=Path, help=path_help)
    replay.add_argument("--operator", type=int, required=True, metavar="I")
    replay.add_argument("--output", type=Path, help="FILE.npy or FILE.h5 (default: operator-<I>.npy)")
    replay.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    replay.add_argument("--force", action="store_true", help="overwrite an existing output file")
    replay.set_defaults(run=_replay_command)

    verify = commands.add_parser("verify", help="replay operators and compare them with the stored digests")
    verify.add_argument("path", type=Path, help=path_help)
    verify.add_argument("--operators", metavar="SEL", help="START:STOP (stop excluded) or I,J,K; default all")
    verify.add_argument("--sample", type=int, metavar="K", help="verify K operators drawn from the selection")
    verify.add_argument("--seed", type=int, metavar="S", help="seed of the --sample draw (default 0)")
    verify.add_argument(
        "--all-files", action="store_true", help="check the sha256 of every shard file, not only the replayed"
    )
    verify.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    verify.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    verify.set_defaults(run=_verify_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except (CliError, StorageError, OSError, ValueError, MemoryError) as exc:
        if "--debug" in argv:
            raise
        # StorageError and SpecError carry a message naming the file and the fix; the type adds nothing.
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


def _open(path: Path, *, strict: bool = True) -> DatasetReader:
    if not path.exists():
        raise CliError(f"{path}: no such file or directory")
    target = path / DATASET_FILE if path.is_dir() else path
    try:
        return open_dataset(path, strict=strict)
    except StorageError:
        raise
    except KeyError as exc:  # an HDF5 file, but without /metadata@spec_json
        raise CliError(f"{target}: not a spinlock dataset (no /metadata@spec_json)") from exc
    except OSError as exc:
        raise CliError(f"{target}: not a readable HDF5 file ({exc})") from exc


# --- info -------------------------------------------------------------------------------------------


def _info_command(args: argparse.Namespace) -> int:
    with _open(args.path, strict=False) as reader:
        summary = _describe(reader)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_info(summary)
    return 1 if summary["problems"] else 0


def _describe(reader: DatasetReader) -> dict[str, Any]:
    spec, handle = reader.spec, reader.file
    metadata = handle["/metadata"].attrs
    versions = json.loads(decode_attr(metadata.get("family_versions", "{}")))
    # Parameter and IC shards are device-independent and record an empty fingerprint; skip those.
    fingerprints = [fp for fp in json.loads(decode_attr(metadata.get("fingerprints", "[]"))) if fp]
    present: dict[str, int] = {}

    def count(name: str, item: Any) -> None:  # visititems stops at the first non-None return
        if isinstance(item, h5py.Group) and isinstance(item.get("present"), h5py.Dataset):
            present[f"/{name}"] = int(np.count_nonzero(item["present"][()]))

    handle.visititems(count)
    return {
        "path": str(reader.path.resolve()),
        "name": spec.name,
        "spec_hash": spec.spec_hash,
        "schema_version": decode_attr(metadata.get("schema_version")),
        "n_operators": spec.n_operators,
        "shard_size": spec.shard_size,
        "n_shards": spec.n_operators // spec.shard_size,
        "grid": list(spec.grid),
        "channels": spec.channels,
        "steps": spec.steps,
        "realizations": spec.realizations,
        "store_trajectories": spec.store_trajectories,
        "store_initial_conditions": spec.store_initial_conditions,
        "families": {name: versions.get(name) for name in reader.families},
        "present": dict(sorted(present.items())),
        "fingerprints": [{"id": fingerprint_id(fp), **fp} for fp in fingerprints],
        # The layout, then whether the rows read what the shard table says (every file's sha256 included).
        "problems": [
            str(problem)
            for problem in dict.fromkeys([*validate_dataset_file(reader.path), *check_dataset(reader.path)])
        ],
    }


def _print_info(s: dict[str, Any]) -> None:
    n = s["n_operators"]
    print(f"dataset       {s['name']} (spec hash {s['spec_hash']}, schema {s['schema_version']})")
    print(f"file          {s['path']}")
    print(f"operators     {n} in {s['n_shards']} shards of {s['shard_size']}")
    print(
        f"shape         grid {s['grid'][0]}x{s['grid'][1]}, C={s['channels']}, T={s['steps']}, "
        f"M={s['realizations']}; trajectories {'stored' if s['store_trajectories'] else 'not stored'}, "
        f"initial conditions {'stored' if s['store_initial_conditions'] else 'regenerated from ic_seed'}"
    )
    print(f"families      {len(s['families'])}; operators present per group, and family versions:")
    versions = {f"/features/{family}": version for family, version in s["families"].items()}
    width = max(map(len, s["present"]), default=0)
    for group, count in s["present"].items():
        print(f"  {group:<{width}}  {count:>{len(str(n))}}/{n}  {versions.get(group, '')}".rstrip())
    print(f"fingerprints  {len(s['fingerprints'])} distinct")
    for fp in s["fingerprints"]:
        details = " ".join(f"{k}={v}" for k, v in sorted(fp.items()) if k not in ("id", "package"))
        print(f"  {fp['id']}  {details}")
    print(f"validation    {len(s['problems'])} problem(s)" if s["problems"] else "validation    ok")
    for problem in s["problems"]:
        print(f"  - {problem}")


# --- replay and verify --------------------------------------------------------------------------------


def _describe_result(result: Verification) -> str:
    if result.status == "exact":
        what = "every realization's digest and every stored value match the replay"
        return f"exact ({what}{'' if result.same_fingerprint else '; fingerprint changed'})"
    if result.status == "tampered":
        return f"tampered ({'; '.join(' '.join(reason.split()) for reason in result.differences)})"
    differ = ", ".join(map(str, result.mismatched_realizations))
    error = f"base series max relative error {result.max_relative_error:.3g}"
    changed = "" if result.same_fingerprint else "; fingerprint changed since generation"
    return f"{result.status} (realizations {differ} differ; {error}{changed})"


def _replay_command(args: argparse.Namespace) -> int:
    output = args.output or Path(f"operator-{args.operator}.npy")
    if output.suffix not in (".npy", ".h5"):
        raise CliError(f"--output {output}: expected a .npy or .h5 file name")
    if output.exists() and not args.force:
        raise CliError(f"{output} already exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise CliError(f"{output.parent}: no such directory for --output")
    with _open(args.path) as reader:
        if not 0 <= args.operator < reader.n_operators:
            raise CliError(f"--operator {args.operator}: outside 0..{reader.n_operators - 1}")
        problems = reader.check_operators(np.array([args.operator])).get(args.operator, [])
        record = reader.operator(args.operator)  # raises, before torch loads, for a row of another operator
        check_memory(reader.spec)
        replayer = Replayer(args.device)  # after the cheap checks: it imports torch
        rollout, result = replayer.replay(reader, args.operator, problems, keep_trajectories=True)
    trajectories = rollout.trajectories
    if output.suffix == ".npy":
        # np.save on a path would append ".npy" to the temporary name
        with atomic_output(output, overwrite=args.force) as tmp, open(tmp, "wb") as handle:
            np.save(handle, trajectories)
    else:

        def fill(handle: h5py.File) -> None:
            dataset = handle.create_dataset("trajectories", data=trajectories)
            dataset.attrs.update(
                {
                    "operator_index": args.operator,
                    "axes": encode_attr(["realization", "time", "channel", "y", "x"]),
                    "spec_hash": record.spec.spec_hash,
                    "digests": encode_attr(list(rollout.digests)),
                    "stored_digests": encode_attr(list(record.digests or ())),
                    "verification": result.status,
                    "fingerprint_id": replayer.fingerprint_id,
                }
            )

        publish_hdf5(output, fill, overwrite=args.force)
    print(f"operator {args.operator}: replayed on {replayer.device} (fingerprint {replayer.fingerprint_id})")
    print(f"verification: {_describe_result(result)}")
    print(f"wrote {output}: {trajectories.dtype} {list(trajectories.shape)} [M, T, C, H, W]")
    return 0 if result.exact else 1


def parse_operators(text: str, n_operators: int) -> np.ndarray:
    """Sorted distinct indices of ``'START:STOP'`` (stop excluded, either end may be left out), ``'I,J,K'``
    or a mix such as ``'0:4,9'``; every index must lie in ``[0, n_operators)``."""
    chosen: set[int] = set()
    for item in text.split(","):
        try:
            if ":" in item:
                start_text, stop_text = item.split(":")
                start = int(start_text) if start_text.strip() else 0
                stop = int(stop_text) if stop_text.strip() else n_operators
                values = range(start, stop)
                if not values:
                    raise CliError(f"--operators {text!r}: range {item.strip()!r} is empty")
            else:
                index = int(item)
                values = range(index, index + 1)
        except ValueError as exc:
            raise CliError(f"--operators {text!r}: expected 'START:STOP' or 'I,J,K' with integers") from exc
        if values.start < 0 or values.stop > n_operators:
            raise CliError(f"--operators {text!r}: {item.strip()!r} is outside 0..{n_operators - 1}")
        chosen.update(values)
    return np.array(sorted(chosen), dtype=np.int64)


def _select(args: argparse.Namespace, n_operators: int) -> np.ndarray:
    if args.operators is None:
        indices = np.arange(n_operators)
    else:
        indices = parse_operators(args.operators, n_operators)
    if args.sample is None:
        if args.seed is not None:
            raise CliError("--seed only applies together with --sample")
        return indices
    if not 1 <= args.sample <= indices.size:
        raise CliError(f"--sample {args.sample}: expected 1..{indices.size} (the operators selected)")
    rng = np.random.default_rng(0 if args.seed is None else args.seed)
    return np.sort(rng.choice(indices, size=args.sample, replace=False))


def _verify_command(args: argparse.Namespace) -> int:
    with _open(args.path, strict=False) as reader:
        indices = _select(args, reader.n_operators)
        problems = reader.check_operators(indices, all_files=args.all_files)
        check_memory(reader.spec)
        replayer = Replayer(args.device)  # after the cheap checks: it imports torch
        # A file that lies about its structure (links, spec, mappings) says nothing about any operator.
        results = [] if reader.structure_problems else replayer.verify(reader, indices, problems)
    general = problems.get(None, [])
    counts = Counter(result.status for result in results)
    failures = [result for result in results if not result.exact]
    ok = not general and not failures  # anything but exact is reported, never passed silently
    changed = [result.operator_index for result in results if not result.same_fingerprint]
    if args.json:
        summary = {
            "operators": indices.tolist(),
            "device": replayer.device,
            "fingerprint_id": replayer.fingerprint_id,
            "counts": {status: counts[status] for status in STATUSES},
            "fingerprint_changed": changed,
            "problems": [str(problem) for problem in general],
            "non_exact": [
                {
                    "operator": r.operator_index,
                    "status": r.status,
                    "mismatched_realizations": list(r.mismatched_realizations),
                    # JSON has no infinity; inf means the NaN patterns differ or nothing was stored.
                    "max_relative_error": r.max_relative_error if np.isfinite(r.max_relative_error) else None,
                    "differences": list(r.differences),
                }
                for r in failures
            ],
            "ok": ok,
        }
        print(json.dumps(summary, indent=2))
        return 0 if ok else 1
    tally = ", ".join(f"{counts[status]} {status}" for status in STATUSES)
    where = f"{replayer.device}, fingerprint {replayer.fingerprint_id}"
    print(f"verified {len(results)} operators ({where}): {tally}")
    if changed:
        print(f"fingerprint changed since generation for {len(changed)} operator(s): not bit-exact replays")
    _print_problems(general)
    print(f"non-exact operators: {len(failures) or 'none'}")
    for result in failures:
        print(f"  operator {result.operator_index}: {_describe_result(result)}")
    return 0 if ok else 1


def _print_problems(problems: list[Problem]) -> None:
    if problems:
        print(f"integrity problems of the dataset: {len(problems)}")
    for problem in problems:
        print(f"  - {problem}")
