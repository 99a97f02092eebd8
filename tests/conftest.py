"""Shared fixtures of the Python test suites (package, deployment)."""

import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from clusters import build_deb, build_foreign_deb, version_of
from testlab.hosts import CPU_SECONDS

# The suites run the deployment's tools (ansible-playbook, and the Vagrant
# provisioner's) from the environment pytest runs in, as scripts/run-tests
# has it first on PATH; so does `.venv/bin/python3 -m pytest tests/...`.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds of the package, the second with a higher revision: those
    in $SORTD_TEST_DEBS (scripts/run-tests builds them once for its
    streams), or built here."""
    shared = os.environ.get("SORTD_TEST_DEBS")
    if shared:
        built = sorted(Path(shared).glob("sortd_*.deb"))
        assert len(built) == 2 and version_of(built[0]) < version_of(built[1]), built
        return built[0], built[1]
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


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that
    have ended and were waited for (the test hosts: CPU_SECONDS)."""
    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF),
                             resource.getrusage(resource.RUSAGE_CHILDREN)))


# Where the time goes: every fixture's set-up and every test's phases, the
# slowest printed at the end of the run, the CPU time of each suite (this
# process's and its children's: the playbooks' control side, builds; the
# session's fixtures count where they were set up), and of each lab's
# hosts. A plugin of the whole session, so that it sees the session's
# fixtures too (this file's hooks see only what is set up for nodes under
# tests/).
class Timings:
    def __init__(self) -> None:
        self.fixtures: list[tuple[float, str]] = []
        self.tests: list[tuple[float, str]] = []
        self.cpu: dict[str, float] = defaultdict(float)
        self.started = time.monotonic()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        before = cpu_seconds()
        yield
        self.cpu[item.nodeid.split("::")[0]] += cpu_seconds() - before

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        started = time.monotonic()
        yield
        # Named by the test that set it up, whose parameters tell, say,
        # which platform's host booted.
        callspec = getattr(getattr(request, "_pyfuncitem", None), "callspec", None)
        for_test = f"[{callspec.id}]" if callspec else ""
        scope = "" if fixturedef.scope == "function" else f" ({fixturedef.scope})"
        self.fixtures.append((time.monotonic() - started, f"{fixturedef.argname}{for_test}{scope}"))

    def pytest_runtest_logreport(self, report):
        self.tests.append((report.duration, f"{report.nodeid} ({report.when})"))

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        terminalreporter.section("slowest fixtures and tests")
        for title, rows in (("fixtures' set-up", self.fixtures), ("tests' phases", self.tests)):
            write(f"slowest {title} (of {len(rows)}), in seconds:")
            for seconds, name in sorted(rows, reverse=True)[:15]:
                write(f"  {seconds:8.1f}  {name}")
        wall = time.monotonic() - self.started
        write(f"CPU time by suite, in seconds (all: {cpu_seconds():.0f} in {wall:.0f} of wall-clock time):")
        for name, seconds in sorted(self.cpu.items(), key=lambda row: -row[1]):
            write(f"  {seconds:8.1f}  {name}")
        write("CPU time of the test hosts, by lab (their cgroups; Vagrant's: its VM's qemu), in seconds:")
        for name, seconds in sorted(CPU_SECONDS.items(), key=lambda row: -row[1]):
            write(f"  {seconds:8.1f}  {name}")


def pytest_configure(config):
    config.pluginmanager.register(Timings(), "sortd-timings")
