"""Launching work on a running deployment through its webserver's GraphQL API (the same calls the UI
makes): asset backfills and single-partition runs. Standard library only; loopback, no proxy."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GraphQLError", "graphql", "launch_backfill", "launch_run"]

LOCATION = "spinlock_assets"  # the code server's location name (deploy/workspace.yaml)
REPOSITORY = "__repository__"

_LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
_LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
  }
}
"""


class GraphQLError(RuntimeError):
    """The webserver answered with an error."""


def _tags(tags: Mapping[str, str] | None) -> list[dict[str, str]]:
    return [{"key": key, "value": value} for key, value in (tags or {}).items()]


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 60) -> dict:
    """POST ``query`` to ``<url>/graphql``; the answer's ``data``."""
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        payload = json.load(response)
    if payload.get("errors"):
        raise GraphQLError(json.dumps(payload["errors"])[:4000])
    return payload["data"]


def launch_backfill(
    url: str,
    assets: Sequence[str | Sequence[str]],
    partitions: Sequence[str] | None,
    *,
    title: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """An asset backfill of ``assets`` (names, or key paths) over ``partitions`` (every partition when
    ``None``), planned and launched by the daemon; its id. (dagster-graphql's client has no backfill
    call: this is the UI's mutation.)"""
    paths = [[asset] if isinstance(asset, str) else list(asset) for asset in assets]
    params: dict[str, Any] = {
        "assetSelection": [{"path": path} for path in paths],
        "title": title or f"{', '.join('/'.join(p) for p in paths)} over {len(partitions or ())} shards",
        "tags": _tags(tags),
    }
    if partitions is None:
        params["allPartitions"] = True
    else:
        params["partitionNames"] = list(partitions)
    result = graphql(url, _LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise GraphQLError(f"launchPartitionBackfill: {result}")
    return result["backfillId"]


def launch_run(url: str, job: str, partition: str, *, tags: Mapping[str, str] | None = None) -> str:
    """A run of ``job`` for one partition (queued, then launched by the daemon); its id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
        "runConfigData": {},
        "executionMetadata": {"tags": _tags({"dagster/partition": partition, **(tags or {})})},
    }
    result = graphql(url, _LAUNCH_RUN, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise GraphQLError(f"launchRun {job}: {result}")
    return result["run"]["runId"]
