"""The project's code location with the multiprocess executor as its default (every step of a run in its
own process), for the concurrency fault test; everything else is ``spinlock_assets.definitions`` as is
(spec and data root from the environment). The project's own default is the in-process executor."""

from __future__ import annotations

import dagster as dg

from spinlock_assets import definitions as project

defs = dg.Definitions(
    assets=project.defs.assets,
    asset_checks=project.defs.asset_checks,
    jobs=project.defs.jobs,
    schedules=project.defs.schedules,
    resources=project.defs.resources,
    executor=dg.multiprocess_executor,
)
