"""Where the ``aion`` command finds its API: the ``aion dev`` stack of this directory.

``aion dev`` keeps its state in a home directory (``./.aion`` by default). While it runs, the
home holds ``api.url`` (written once the API answers, removed on stop) and ``aion-dev.lock``
(the supervisor's pid). Without ``--api`` or ``AION_API_URL`` the CLI uses the stack of
``AION_DEV_HOME`` if set, else of the nearest ``.aion/`` at or above the working directory,
provided its supervisor is still alive; otherwise ``http://127.0.0.1:8080``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["API_URL_FILE", "DEFAULT_API", "HOME_DIR", "find_api", "forget_api_url", "write_api_url"]

DEFAULT_API = "http://127.0.0.1:8080"
HOME_DIR = ".aion"
API_URL_FILE = "api.url"
_LOCK_FILE = "aion-dev.lock"  # aion_dev.pidfile.HomeLock: the supervisor's pid


def write_api_url(home: Path, url: str) -> None:
    """Tell CLIs run under this home where its API is (``aion dev``, once the API answers)."""
    partial = home / f"{API_URL_FILE}.partial"
    partial.write_text(url + "\n", encoding="utf-8")
    partial.replace(home / API_URL_FILE)


def forget_api_url(home: Path) -> None:
    """The stack stopped (idempotent)."""
    (home / API_URL_FILE).unlink(missing_ok=True)


def _homes(cwd: Path, env: Mapping[str, str]) -> Iterator[Path]:
    given = env.get("AION_DEV_HOME")
    if given:
        yield (cwd / given).resolve()
    for directory in (cwd, *cwd.parents):
        yield directory / HOME_DIR


def _running(home: Path) -> bool:
    """Whether the supervisor that holds ``home``'s lock is alive."""
    try:
        pid = int((home / _LOCK_FILE).read_text(encoding="utf-8").strip())
        os.kill(pid, 0)
    except (OSError, ValueError):  # no lock file, no pid, or no such process
        return False
    return True


def find_api(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The API URL to use and where it came from (for messages): a running ``aion dev``'s
    home, else the default."""
    env = os.environ if env is None else env
    for home in _homes((cwd or Path.cwd()).resolve(), env):
        try:
            url = (home / API_URL_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if url and _running(home):
            return url, f"the aion dev stack of {home}'s"
    return DEFAULT_API, "the default: no running aion dev was found from here"
