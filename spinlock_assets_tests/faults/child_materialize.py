"""Child process of the kill test: materialize assets of one shard through ``spinlock_assets.definitions``.

``python -m spinlock_assets_tests.faults.child_materialize <partition> <asset>[,<asset>...]`` with
``SPINLOCK_SPEC`` / ``SPINLOCK_DATA_ROOT`` set. When ``$SPINLOCK_FAULT_HANG_MARKER`` names a file, the shard
writer of THIS process (patched here, nowhere else) writes its first array, flushes it to the temporary
file, publishes the temporary path in the marker file and then hangs, so the parent can SIGKILL it
while the shard file is being written.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HANG_MARKER_ENV = "SPINLOCK_FAULT_HANG_MARKER"


def hang_after_first_array(marker: Path) -> None:
    from spinlock_assets.storage import shard_file

    write_array = shard_file.write_array

    def write_then_hang(group, name, array) -> None:
        write_array(group, name, array)
        group.file.flush()
        ready = marker.with_name(marker.name + ".part")
        ready.write_text(group.file.filename)
        os.replace(ready, marker)
        while True:
            time.sleep(60)

    shard_file.write_array = write_then_hang


def main(argv: list[str]) -> int:
    partition, selection = argv[0], argv[1].split(",")
    if os.environ.get(HANG_MARKER_ENV):
        hang_after_first_array(Path(os.environ[HANG_MARKER_ENV]))

    import dagster as dg

    from spinlock_assets.definitions import defs

    result = dg.materialize(
        list(defs.assets), selection=selection, partition_key=partition, resources=defs.resources
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
