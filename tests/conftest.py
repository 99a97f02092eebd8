"""Shared fixtures of the Python test suites (package, deployment)."""

import time
from pathlib import Path

import pytest

from clusters import build_deb


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> tuple[Path, Path]:
    """Two builds of the package, the second with a higher revision."""
    into = tmp_path_factory.mktemp("debs")
    base = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return build_deb(into, f"{base}.1"), build_deb(into, f"{base}.2")
