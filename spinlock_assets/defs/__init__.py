"""The Dagster layer: every module that imports Dagster lives here (assets by group, checks, jobs,
schedules, resources, the IO manager, partitions, the main job). ``spinlock_assets.definitions`` is the
composition root that assembles them; ``core``, ``storage``, ``cli`` and ``figures`` never import Dagster."""
