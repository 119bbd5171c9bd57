"""Fixtures for the integration tier: a session-wide booted systemd, and per-test units.

- `release` (session): the matrix cell under test, from $SDACTIVATE_SYSTEMD (252, the
  host, by default; 254, 257 or 262 boot a Debian tree built by integration/releases.py,
  cached under /var/cache/sdactivate/rootfs). `systemd_version` is its major version, for
  expectations that differ by version.
- `sandbox` (session): a booted `Sandbox` of that release. Needs root; skipped (with the
  reason) when not root outside CI. On CI (`CI=true`) every skipped integration test is
  reported as a failure. A tree that cannot be built, or a manager of another version than
  the release's, fails every test that uses it (never a skip).
- `units` (function): installs unit files into the sandbox, stops and removes them on
  teardown, and prints their journal if the test failed.
- `measurements` (function): `measurements("text")` adds a line to the terminal summary,
  so restart figures show up without `-s`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from integration.releases import Release, boot_release, selected
from integration.sandbox import Sandbox, Units

HERE = Path(__file__).resolve().parent
_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
_LINES_KEY = pytest.StashKey[list[str]]()


def on_ci() -> bool:
    """True on CI, where integration tests must run rather than skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _is_integration(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES_KEY] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_integration(item):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not _is_integration(item):
        return
    if report.skipped and on_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"integration test skipped on CI (CI=true), which is a failure: {reason}"
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_LINES_KEY, [])
    if lines:
        terminalreporter.section("sdactivate integration measurements")
        for line in lines:
            terminalreporter.write_line(line)


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(_REPORT_KEY, {})
    return any(r.failed for r in reports.values())


def require_sandbox_host() -> None:
    """Skip (a failure on CI) when this machine cannot boot a sandbox."""
    if os.geteuid() != 0:
        pytest.skip("integration tests boot systemd in namespaces and need root")
    for tool in ("unshare", "nsenter", "systemctl", "journalctl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (apt-get install systemd util-linux)")
    if not os.path.exists("/lib/systemd/systemd"):
        pytest.skip("/lib/systemd/systemd not installed (apt-get install systemd)")


@pytest.fixture(scope="session")
def release() -> Release:
    """The release under test ($SDACTIVATE_SYSTEMD, default the host's 252)."""
    return selected()


@pytest.fixture(scope="session")
def systemd_version(release: Release) -> int:
    """The systemd major version under test (the sandbox's manager reports the same)."""
    return release.systemd


@pytest.fixture(scope="session")
def sandbox(release: Release, request: pytest.FixtureRequest) -> Generator[Sandbox, None, None]:
    """A booted systemd of the release under test, shared by the session's tests."""
    require_sandbox_host()
    box = boot_release(release)
    request.config.stash[_LINES_KEY].append(
        f"sandbox: systemd {box.systemd_version} ({release.name}, Python {release.python})"
        f" booted to 'running' in {box.boot_seconds * 1000:.0f} ms (pid {box.pid})"
    )
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def measurements(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measurement line for the terminal summary (and print it)."""
    lines = request.config.stash[_LINES_KEY]
    name = request.node.name

    def record(text: str) -> None:
        print(text)
        lines.append(f"{name}: {text}")

    return record


@pytest.fixture
def units(sandbox: Sandbox, request: pytest.FixtureRequest) -> Generator[Units, None, None]:
    """Install units for this test; they are stopped and removed afterwards."""
    tracked = Units(sandbox)
    try:
        yield tracked
    finally:
        tracked.teardown(failed=_failed(request.node))
