"""Atomic publication of a file: write a hidden sibling, fsync it, then rename it to the real name.

A crash or an exception at any point leaves either the old file or the new one under the real
name, never a half-written one; the temporary sibling is deleted on exceptions, and a killed
process's leftover is recognisable by its name (``.<name>.tmp-<pid>-<hex>``) for later cleanup.

HDF5 files are built in memory first (``publish_hdf5``): when HDF5 itself writes to a full disk, the
failed flush leaves h5py objects that fail again when they are garbage collected ("Exception ignored",
pages of them) and can crash the interpreter at exit. Built in memory, the file reaches the disk as one
plain ``write`` of its bytes, whose failure is an ordinary ``OSError`` and nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

from spinlock_assets.storage.errors import OutputExistsError, StorageError

__all__ = ["atomic_output", "hdf5_image", "publish_hdf5", "temp_path_for", "parse_temp_name"]

_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9a-f]+$")


def temp_path_for(path: Path) -> Path:
    """A fresh hidden sibling of ``path`` naming this process; the random part keeps threads apart."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(8)}")


def parse_temp_name(name: str) -> tuple[str, int] | None:
    """``(published file name, writer pid)`` of a temporary file name, or None for any other name."""
    match = _TEMP_NAME.match(name)
    return None if match is None else (match.group("name"), int(match.group("pid")))


@contextmanager
def atomic_output(
    path: Path, *, overwrite: bool, exists_error: type[OutputExistsError] = OutputExistsError
) -> Iterator[Path]:
    """Yield a temporary path to write; publish it as ``path`` when the block ends without an exception.

    Without ``overwrite``, an existing ``path`` raises ``exists_error`` before the block runs and again
    at publication if another writer got there first (the publication is a hard link, which never
    replaces a file).
    """
    if not overwrite and path.exists():
        raise exists_error(f"{path} already exists; pass overwrite=True to replace it")
    tmp = temp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:  # the data must be on disk before the name points at it
            os.fsync(handle.fileno())
        _publish(tmp, path, overwrite=overwrite, exists_error=exists_error)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable; directories cannot be opened on Windows
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, path: Path, *, overwrite: bool, exists_error: type[OutputExistsError]) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists_error(f"{path} already exists (written concurrently); pass overwrite=True") from None
    except OSError:
        # Filesystems without hard links (some network and FUSE mounts): check, then rename.
        if path.exists():
            raise exists_error(f"{path} already exists (written concurrently); pass overwrite=True") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def hdf5_image(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file that ``fill`` writes, built in memory (core driver, no backing store).

    libver v110: checksummed object headers, so damaged names, shapes and dtypes fail the read too.
    """
    with h5py.File(
        f"in-memory-{secrets.token_hex(8)}.h5",
        "w",
        driver="core",
        backing_store=False,
        libver=("v110", "latest"),
    ) as handle:
        fill(handle)
        handle.flush()
        return handle.id.get_file_image()


def publish_hdf5(
    path: Path,
    fill: Callable[[h5py.File], None],
    *,
    overwrite: bool,
    exists_error: type[OutputExistsError] = OutputExistsError,
) -> bytes:
    """Build the HDF5 file ``fill`` writes in memory and publish it atomically as ``path``; return its bytes
    (so a caller hashes them without reading the file back). A failed write (disk full, permissions)
    raises one ``OSError`` naming ``path``: the OS does not say which file."""
    try:
        image = hdf5_image(fill)
        with (
            atomic_output(path, overwrite=overwrite, exists_error=exists_error) as tmp,
            open(tmp, "xb") as out,
        ):
            out.write(image)
    except StorageError:  # already names the file and the fix
        raise
    except OSError as exc:
        message = (
            f"{path}: writing the file failed ({exc.strerror or exc}); nothing was published and a previous "
            "file under that name keeps its bytes"
        )
        raise (OSError(exc.errno, message) if exc.errno is not None else OSError(message)) from None
    return image
