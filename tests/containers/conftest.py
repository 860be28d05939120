"""The container tests: a real Docker engine and the images of ``make images``.

Without a Docker engine they skip, saying why — except when ``CI`` is set, where they fail
(``make test`` installs and starts one, so CI never lacks it). The images are built (or found
up to date by their inputs label) once per session, so ``make pytest`` works on its own too.
"""

from __future__ import annotations

import os

import pytest

from aion_common.testing._support import ProvisionError
from aion_common.testing.dockerd import server_version
from aion_common.testing.images import ImageSet, build_images

# Ryuk (testcontainers' reaper) cannot be pulled without a registry; the fixtures clean up.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the container tests may not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_version() -> str:
    """The version of the Docker engine that answers (skip, or fail in CI, without one)."""
    version = server_version()
    if version is None:
        _unavailable(
            "no Docker engine answers (`make test` installs and starts one as root on Debian; "
            "elsewhere start Docker)"
        )
    assert version is not None
    return version


@pytest.fixture(scope="session")
def images(docker_version: str) -> ImageSet:
    """Every aion image, built from local parts if needed (no-op when up to date)."""
    lines: list[str] = []
    try:
        built = build_images(say=lines.append)
    except ProvisionError as err:
        pytest.fail(f"building the images failed: {err}", pytrace=False)
    print("\n".join(lines))  # shown with -s, and in the report of a failed test
    return built
