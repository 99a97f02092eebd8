"""Shared fixtures of the Python test suites (package, deployment)."""

import os
import sys
import time
from pathlib import Path

import pytest

from clusters import build_deb, build_foreign_deb, version_of

# The suites run the deployment's tools (ansible-playbook, and the Vagrant
# provisioner's) from the environment pytest runs in, as scripts/run-tests
# has it first on PATH; so does `.venv/bin/python3 -m pytest tests/...`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds of the package, the second with a higher revision."""
    into = tmp_path_factory.mktemp("debs")
    base = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return build_deb(into, f"{base}.1"), build_deb(into, f"{base}.2")


@pytest.fixture(scope="session")
def arm64_debs(tmp_path_factory, debs) -> tuple[Path, Path]:
    """The arm64 builds of the package (debian/build-cross), with the native
    builds' versions: two releases, each for both architectures."""
    into = tmp_path_factory.mktemp("arm64")
    first, second = (build_foreign_deb(into, "arm64", version_of(deb).split("-")[-1]) for deb in debs)
    return first, second


@pytest.fixture(scope="session")
def arm64_deb(arm64_debs) -> Path:
    """The arm64 build of the newer release."""
    return arm64_debs[1]


# Where the time goes: every fixture's set-up and every test's phases, the
# slowest printed at the end of the run.
_fixture_seconds: list[tuple[float, str]] = []
_test_seconds: list[tuple[float, str]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    started = time.monotonic()
    yield
    # Named by the test that set it up, whose parameters tell, say, which
    # platform's host booted.
    item = getattr(request, "_pyfuncitem", None)
    callspec = getattr(item, "callspec", None)
    for_test = f"[{callspec.id}]" if callspec else ""
    scope = "" if fixturedef.scope == "function" else f" ({fixturedef.scope})"
    _fixture_seconds.append((time.monotonic() - started, f"{fixturedef.argname}{for_test}{scope}"))


def pytest_runtest_logreport(report):
    _test_seconds.append((report.duration, f"{report.nodeid} ({report.when})"))


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    terminalreporter.section("slowest fixtures and tests")
    for title, rows in (("fixtures' set-up", _fixture_seconds), ("tests' phases", _test_seconds)):
        write(f"slowest {title} (of {len(rows)}), in seconds:")
        for seconds, name in sorted(rows, reverse=True)[:15]:
            write(f"  {seconds:8.1f}  {name}")
