"""Child process of the kill test: materialize assets of one shard through ``spinlock_assets.definitions``.

``python -m spinlock_assets_tests.faults.child_materialize <partition> <asset>[,<asset>...]`` with
``SPINLOCK_SPEC`` / ``SPINLOCK_DATA_ROOT`` set. When ``$SPINLOCK_FAULT_HANG_MARKER`` names a file, the shard
writer of THIS process (patched here, nowhere else) builds the file, writes the first half of its bytes
to the temporary file, publishes the temporary path in the marker file and then hangs, so the parent can
SIGKILL it while the shard file is being written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HANG_MARKER_ENV = "SPINLOCK_FAULT_HANG_MARKER"


def hang_mid_write(marker: Path) -> None:
    from spinlock_assets.storage import atomic, shard_file

    def publish_then_hang(path, fill, *, overwrite, exists_error) -> bytes:
        image = atomic.hdf5_image(fill)
        with atomic.atomic_output(path, overwrite=overwrite, exists_error=exists_error) as tmp:
            with open(tmp, "xb") as out:
                out.write(image[: len(image) // 2])
            ready = marker.with_name(marker.name + ".part")
            ready.write_text(str(tmp))
            os.replace(ready, marker)
            while True:
                time.sleep(60)

    shard_file.publish_hdf5 = publish_then_hang


def main(argv: list[str]) -> int:
    partition, selection = argv[0], argv[1].split(",")
    if os.environ.get(HANG_MARKER_ENV):
        hang_mid_write(Path(os.environ[HANG_MARKER_ENV]))

    import dagster as dg

    from spinlock_assets.definitions import defs

    result = dg.materialize(
        list(defs.assets), selection=selection, partition_key=partition, resources=defs.resources
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
