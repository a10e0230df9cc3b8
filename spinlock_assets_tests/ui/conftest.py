"""Fixtures for the browser tests: Debian's Chromium through playwright, and one shared ``dagster dev``.

One server serves the whole session (starting one and generating shards cost most of the run time on
two cores). It starts on the tiny spec cut to two shards (8 operators), so that the spec-growth
workflow can grow it to three from the UI; ``generated_dev`` gives the other workflows the full tiny
spec (12 operators, 3 shards) with every shard generated, growing and generating through GraphQL
whatever the growth workflow has not done (so any test also runs alone, in any order).

Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``), never a playwright download. Without
it the tests skip, unless ``SPINLOCK_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator

import pytest

from spinlock_assets_tests.conftest import tiny_spec
from spinlock_assets_tests.e2e.dagster_dev import DagsterDev, DagsterDevError, dagster_dev

from .server_setup import current_spec, generate_missing_shards, grow_spec, reload_location

SMALL_OPERATORS = 8  # two shards of four: the growth workflow adds the third
FULL_OPERATORS = 12  # the tiny spec: three shards
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
ACTION_TIMEOUT_MS = 30_000  # a loaded two-core machine: GraphQL answers can take seconds
NAVIGATION_TIMEOUT_MS = 60_000


def _unavailable(reason: str) -> None:
    if os.environ.get("SPINLOCK_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SPINLOCK_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable("Chromium is not installed (as root: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture(autouse=True)
def _browser_available(chromium_path: str) -> None:
    """Skip (or fail) before anything expensive starts when there is no browser."""


@pytest.fixture(scope="session")
def browser_context(chromium_path: str, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
        yield context
        context.close()


@pytest.fixture(scope="session")
def dev(tmp_path_factory) -> Iterator[DagsterDev]:
    """The session's ``dagster dev``, started on the two-shard spec (see the module docstring)."""
    directory = tmp_path_factory.mktemp("dagster_dev_ui")
    with dagster_dev(directory, tiny_spec(n_operators=SMALL_OPERATORS)) as server:
        yield server


@pytest.fixture
def live_dev(dev: DagsterDev) -> DagsterDev:
    """The shared server, checked alive (a crash in an earlier test shows up as such)."""
    if not dev.running:
        raise DagsterDevError(f"dagster dev died during the session\n{dev.log_tail()}")
    return dev


@pytest.fixture
def generated_dev(live_dev: DagsterDev) -> DagsterDev:
    """The shared server on the full tiny spec, every shard generated (GraphQL setup)."""
    if current_spec(live_dev).n_operators < FULL_OPERATORS:
        grow_spec(live_dev, FULL_OPERATORS)
        reload_location(live_dev)
    generate_missing_shards(live_dev)
    return live_dev


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(browser_context, live_dev: DagsterDev, request):
    """A fresh tab on the server's UI; the "Join the Dagster community" modal (shown once per Dagster
    instance, whenever it comes up) is dismissed with Skip. A failing test leaves a screenshot in
    ``artifacts/ui/<test>-failure.png``."""
    from .dagster_ui import save_screenshot

    tab = browser_context.new_page()
    community = tab.get_by_role("dialog").filter(has_text="Join the Dagster community")
    tab.add_locator_handler(community, lambda dialog: dialog.get_by_role("button", name="Skip").click())
    tab.goto(live_dev.url)
    tab.get_by_role("navigation").get_by_role("link", name=re.compile("Catalog$")).wait_for()
    yield tab
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        save_screenshot(tab, f"{request.node.name}-failure")
    tab.close()
