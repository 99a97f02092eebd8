"""Shared fixtures of the Python test suites (package, deployment)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_deb(revision: str, into: Path) -> Path:
    """Builds the .deb with the given Debian revision into `into` (cargo deb
    removes older builds from target/debian); returns its path."""
    env = dict(os.environ, SORTD_DEB_REVISION=revision)
    out = subprocess.run([str(ROOT / "debian" / "build")], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    built = Path(out.strip().splitlines()[-1])
    return Path(shutil.copy(built, into / built.name))


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds of the package, the second with a higher revision."""
    into = tmp_path_factory.mktemp("debs")
    base = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return build_deb(f"{base}.1", into), build_deb(f"{base}.2", into)


@pytest.fixture()
def dotfile(tmp_path, monkeypatch) -> Path:
    """Where test hosts leave their keys, as Vagrant's .vagrant would."""
    path = tmp_path / "vagrant-dotfile"
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", str(path))
    return path
