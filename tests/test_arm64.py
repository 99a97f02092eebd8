"""The arm64 package: cross-built here with Debian's toolchain
(debian/build-cross), its binary run under qemu-user (binfmt_misc, with
arm64's libc from Debian) answers every API example of the README. (That the
playbook gives each node the build of its own architecture, or stops:
tests/test_deploy.py.)

Installed on arm64 hosts (VMs under qemu-system's emulation, one per suite),
the package is tested by tests/test_package.py and deployed by
tests/test_deploy.py, with the same tests as on amd64."""

import os
import subprocess
import time
from pathlib import Path

import pytest
from clusters import ROOT, version_of
from test_readme import check_api_examples
from testlab import free_port, listening
from testlab.hosts import wait_until

# The arm64 build and its tools: scripts/run-tests runs these with the emulated hosts.
pytestmark = pytest.mark.emulated


@pytest.fixture(scope="module")
def arm64_libc(tmp_path_factory) -> Path:
    """arm64's libc from Debian trixie, as qemu-user's prefix for the
    dynamic loader (QEMU_LD_PREFIX)."""
    root = tmp_path_factory.mktemp("arm64-libc") / "root"
    subprocess.run(["mmdebstrap", "--variant=extract", "--quiet", "--architectures=arm64",
                    "--include=libc6,libgcc-s1", "trixie", str(root)], check=True, capture_output=True)
    (root / "lib").symlink_to("usr/lib")  # /lib/ld-linux-aarch64.so.1, as on a merged-/usr host
    subprocess.run([str(ROOT / "scripts/binfmt"), "arm64"], check=True)
    return root


@pytest.fixture(scope="module")
def unpacked(arm64_deb, tmp_path_factory) -> Path:
    into = tmp_path_factory.mktemp("arm64-deb")
    subprocess.run(["dpkg-deb", "-x", str(arm64_deb), str(into)], check=True)
    return into


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def test_the_arm64_package_holds_an_arm64_binary_and_its_dependencies(arm64_deb, unpacked, debs):
    assert field(arm64_deb, "Architecture") == "arm64"
    assert field(arm64_deb, "Version") == field(debs[1], "Version")
    assert field(arm64_deb, "Depends") == field(debs[1], "Depends")  # libc6 (>= 2.34), nginx
    elf = (unpacked / "usr/bin/sortd").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF" and int.from_bytes(elf[18:20], "little") == 0xB7  # EM_AARCH64
    native = {path.relative_to(unpacked) for path in unpacked.rglob("*")}
    assert Path("usr/lib/systemd/system/sortd.service") in native and Path("etc/nginx/sites-available/sortd") in native


def test_the_arm64_binary_answers_the_readme_api_examples(arm64_libc, unpacked, arm64_deb):
    sortd = str(unpacked / "usr/bin/sortd")
    env = dict(os.environ, QEMU_LD_PREFIX=str(arm64_libc))
    version = subprocess.run([sortd, "--version"], env=env, capture_output=True, text=True, check=True).stdout
    assert version.split()[-1] == version_of(arm64_deb)
    port = free_port()
    process = subprocess.Popen([sortd], env=dict(env, SORTD_LISTEN=f"127.0.0.1:{port}"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(port), 30, "the arm64 sortd")
        started = time.monotonic()
        count = check_api_examples(port)
        print(f"arm64 sortd under qemu-user: {count} README API examples as written, "
              f"in {time.monotonic() - started:.1f}s")
    finally:
        process.terminate()
        process.wait(timeout=30)
