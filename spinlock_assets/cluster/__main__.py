"""``python -m spinlock_assets.cluster up|down|status``: what ``scripts/cluster.sh`` runs."""

from __future__ import annotations

import argparse
import sys

from .deployment import DeploymentError
from .lifecycle import down, status, up
from .services import ServiceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default="cluster", help="the deployment's folder (default ./cluster)")
    parser.add_argument("--workers", type=int, default=2, help="CPU Celery run workers (default 2)")
    parser.add_argument("--cuda-workers", type=int, default=0, help="CUDA run workers, one GPU each")
    parser.add_argument("--spec", default="", help="dataset spec JSON (default: the package default)")
    parser.add_argument("--data-root", default="", help="HDF5 root (default <dir>/data)")
    parser.add_argument("--port", type=int, default=3000, help="webserver port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            deployment = up(
                args.dir,
                cpu_workers=args.workers,
                cuda_workers=args.cuda_workers,
                spec=args.spec,
                data_root=args.data_root,
                webserver_port=args.port,
            )
            print(f"up: {deployment.url} (DAGSTER_HOME={deployment.dagster_home}, logs in {args.dir}/logs)")
        elif args.command == "down":
            down(args.dir)
            print("down: every process stopped")
        else:
            parts = status(args.dir)
            print("\n".join(f"{name:16} {state}" for name, state in parts.items()))
            return 0 if all(state != "down" for state in parts.values()) else 3
    except (DeploymentError, ServiceError) as error:
        print(f"cluster {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
