"""``ShardStore``: the folder of shard files, ``<root>/<asset>/<shard_key>.h5``.

Each (asset, shard) has its own file, so concurrent partitions never share an HDF5 writer.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spinlock_assets.core.shards import parse_shard_key
from spinlock_assets.storage.arrays import StoredArray
from spinlock_assets.storage.atomic import atomic_output, parse_temp_name
from spinlock_assets.storage.errors import ShardCorruptError, SpecMismatchError, StorageError
from spinlock_assets.storage.layout import SPEC_MARKER_FILE, Problem
from spinlock_assets.storage.manifest import ShardRecord, read_manifest, write_manifest
from spinlock_assets.storage.shard_file import (
    ShardContents,
    ShardFileInfo,
    ShardHeader,
    file_sha256,
    read_shard_file,
    read_shard_header,
    write_shard_file,
)

__all__ = ["ShardStore", "pid_alive"]

_ASSET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ShardStore:
    """Shard files under ``root``; every method checks the asset name and the shard key first."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ShardStore({str(self.root)!r})"

    def path(self, asset: str, shard_key: str) -> Path:
        """``<root>/<asset>/<shard_key>.h5`` (whether or not it exists)."""
        parse_shard_key(shard_key)  # rejects names that are not shard keys, such as '../x'
        return self._asset_dir(asset) / f"{shard_key}.h5"

    def write(
        self,
        asset: str,
        shard_key: str,
        arrays: Mapping[str, StoredArray],
        attrs: Mapping[str, Any],
        *,
        overwrite: bool = False,
    ) -> ShardFileInfo:
        """Write one shard file atomically; ``asset``, ``shard_key`` and the operator range are filled in.

        Values for those keys given in ``attrs`` must agree with the location (``ValueError`` otherwise).
        """
        start, stop = parse_shard_key(shard_key).bounds
        located = {"asset": asset, "shard_key": shard_key, "operator_start": start, "operator_stop": stop}
        for key, value in located.items():
            if key in attrs and attrs[key] != value:
                raise ValueError(
                    f"file attribute {key!r}: expected {value!r} for this location, got {attrs[key]!r}"
                )
        path = self.path(asset, shard_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = write_shard_file(path, arrays, {**attrs, **located}, overwrite=overwrite)
        write_manifest(ShardRecord.of(read_shard_header(path), info.sha256))
        return info

    def record(
        self, asset: str, shard_key: str, *, expected_spec_hash: str | None = None
    ) -> ShardRecord | None:
        """What consolidation needs of a shard file (None when it does not exist): its manifest while the
        file keeps the recorded size and mtime, else its header and a fresh SHA-256 of its bytes."""
        path = self.path(asset, shard_key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        record = read_manifest(path)
        if record is None or not record.matches(stat):
            record = ShardRecord.of(self.read_header(asset, shard_key), file_sha256(path))
        if expected_spec_hash is not None and record.attrs.get("spec_hash") != expected_spec_hash:
            self.read_header(asset, shard_key, expected_spec_hash=expected_spec_hash)  # raises, naming both
        self._check_location(path, record.attrs, asset, shard_key)
        return record

    def read(
        self,
        asset: str,
        shard_key: str,
        *,
        expected_spec_hash: str | None = None,
        names: Iterable[str] | None = None,
    ) -> ShardContents:
        """Read a shard's arrays (``names``, all when None); see ``read_shard_file`` for the errors."""
        contents = read_shard_file(
            self.path(asset, shard_key), expected_spec_hash=expected_spec_hash, names=names
        )
        self._check_location(contents.path, contents.attrs, asset, shard_key)
        return contents

    def read_rows(
        self, asset: str, shard_key: str, operators: Sequence[int], *, expected_spec_hash: str | None = None
    ) -> tuple[ShardHeader, dict[str, np.ndarray]]:
        """The shard's header (file attributes, array descriptions) and the rows of ``operators`` (global
        indices inside the shard) of every array: a replay of a few operators reads those rows only."""
        header = self.read_header(asset, shard_key, expected_spec_hash=expected_spec_hash)
        start, stop = parse_shard_key(shard_key).bounds
        rows = sorted({index - start for index in operators})
        if rows and not (rows[0] >= 0 and rows[-1] < stop - start):
            raise ValueError(f"operators {sorted(operators)} are not all in shard {shard_key}")
        try:
            with h5py.File(header.path, "r") as handle:
                arrays = {name: handle[name][rows] for name in header.arrays}
        except (OSError, RuntimeError) as exc:
            raise ShardCorruptError(f"{header.path}: rows cannot be read ({exc}); rematerialize it") from None
        return header, arrays

    def claim_spec(self, spec_hash: str, spec_json: str) -> None:
        """Bind the root to one spec, or raise ``SpecMismatchError`` if it holds another spec's shards.

        The first call writes ``spec.json`` at the root; every later call reads that one small file, so
        the check costs the same at ten shards or a million. A root written before the marker existed is
        scanned once (one readable shard per asset decides) and then marked."""
        marker = self.root / SPEC_MARKER_FILE
        try:
            recorded = json.loads(marker.read_text())["spec_hash"]
        except FileNotFoundError:
            recorded = self._spec_hash_of_shards()
            if recorded in (None, spec_hash):
                self.root.mkdir(parents=True, exist_ok=True)
                with atomic_output(marker, overwrite=True) as tmp:
                    tmp.write_text(json.dumps({"spec_hash": spec_hash, "spec": json.loads(spec_json)}))
                return
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"{marker}: not a spec marker (expected JSON with 'spec_hash')") from None
        if recorded != spec_hash:
            raise SpecMismatchError(
                f"{self.root} holds shards of spec hash {recorded} ({marker}), but the current spec has hash "
                f"{spec_hash}: a changed spec needs a new dataset root (set SPINLOCK_DATA_ROOT to an empty "
                "folder)"
            )

    def _spec_hash_of_shards(self) -> str | None:
        """The spec hash of the first readable shard of any asset folder (None for an empty root)."""
        if not self.root.is_dir():
            return None
        # Asset folders are identifiers; anything else (lost+found, .ipynb_checkpoints) is not ours.
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.isidentifier()):
            for key in self.shard_keys(folder.name):
                try:
                    return self.read_header(folder.name, key).attrs.get("spec_hash")
                except StorageError:
                    continue  # a damaged shard is for the integrity check; re-materializing repairs it
        return None

    def read_header(
        self, asset: str, shard_key: str, *, expected_spec_hash: str | None = None
    ) -> ShardHeader:
        """A shard's file attributes and array descriptions, without array data."""
        header = read_shard_header(self.path(asset, shard_key), expected_spec_hash=expected_spec_hash)
        self._check_location(header.path, header.attrs, asset, shard_key)
        return header

    def exists(self, asset: str, shard_key: str) -> bool:
        return self.path(asset, shard_key).is_file()

    def shard_keys(self, asset: str) -> list[str]:
        """Published shard keys of ``asset`` in operator order; temporary and foreign files are skipped."""
        folder = self._asset_dir(asset)
        if not folder.is_dir():
            return []
        keys = []
        for entry in folder.glob("ops-*.h5"):
            try:
                keys.append((parse_shard_key(entry.stem), entry.stem))
            except ValueError:
                continue  # not a shard file of this layout; validation reports it where it matters
        return [key for _, key in sorted(keys)]

    def sha256(self, asset: str, shard_key: str) -> str:
        return file_sha256(self.path(asset, shard_key))

    def verify_integrity(self, asset: str, shard_key: str, expected_sha256: str) -> Problem | None:
        """A Problem when the shard file is missing or its bytes changed since ``expected_sha256``."""
        path = self.path(asset, shard_key)
        if not path.is_file():
            return Problem(str(path), "shard file does not exist")
        actual = file_sha256(path)
        if actual != expected_sha256:
            return Problem(str(path), f"sha256 is {actual}, expected {expected_sha256}: the file changed")
        return None

    def remove_stale_temp_files(self, asset: str, *, min_age_s: float = 3600.0) -> list[Path]:
        """Delete temporary files left by killed writers of ``asset``; return the paths removed.

        A temp file is removed only when it is older than ``min_age_s`` AND its writer pid is not a
        live process here. A live writer keeps its file (even if it is slow), and on shared storage a
        writer on another host is protected by the age limit, since writers finish within seconds.
        """
        folder = self._asset_dir(asset)
        if not folder.is_dir():
            return []
        removed = []
        now = time.time()
        for entry in folder.iterdir():
            parsed = parse_temp_name(entry.name)
            if parsed is None or not entry.is_file():
                continue
            if now - entry.stat().st_mtime >= min_age_s and not pid_alive(parsed[1]):
                entry.unlink(missing_ok=True)
                removed.append(entry)
        return sorted(removed)

    def _asset_dir(self, asset: str) -> Path:
        if not _ASSET_NAME.fullmatch(asset):
            raise ValueError(f"asset name must be an identifier (it becomes a folder name), got {asset!r}")
        return self.root / asset

    @staticmethod
    def _check_location(path: Path, attrs: Mapping[str, Any], asset: str, shard_key: str) -> None:
        if (attrs["asset"], attrs["shard_key"]) != (asset, shard_key):
            raise ShardCorruptError(
                f"{path}: file attributes say asset {attrs['asset']!r}, shard {attrs['shard_key']!r}, "
                f"but the file lies at asset {asset!r}, shard {shard_key!r} (moved or renamed by hand?)"
            )


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a process of another user counts)."""
    if os.name != "posix":
        return True  # on Windows os.kill(pid, 0) would send CTRL_C_EVENT; keep the file instead
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
