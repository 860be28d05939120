"""Installs the peers under a scratch directory outside the tracked tree (``.aion/peers``).

- DBOS: a venv with ``dbos`` (and ``psutil`` for the scripts' resource figures), and a
  PostgreSQL cluster from the project's test harness (``aion_common.testing.postgres``) run with
  PostgreSQL's own durability settings — ``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on, which the test cluster turns off — as the peers' figures were taken.
- Restate: ``@restatedev/restate-server`` from npm (install scripts off: the package's only one
  is a telemetry reporter), and a venv with ``restate-sdk``, ``hypercorn`` and ``aiohttp``.

Versions are pinned to those the peers' figures were taken with (``README.md`` here). Each part
is installed once; a stamp file holding what was installed makes a changed pin reinstall it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from aion_common.testing import PostgresCluster

DBOS_PACKAGES = ("dbos==3.4.0", "psutil==7.2.2")
RESTATE_PACKAGES = ("restate-sdk==1.2.0", "hypercorn==0.18.0", "aiohttp==3.14.5", "psutil==7.2.2")
RESTATE_SERVER = "@restatedev/restate-server@1.7.12"
# PostgreSQL's defaults for what the test cluster changes, and the peers' connection limit.
DURABLE_POSTGRES = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "300",
}


def say(text: str) -> None:
    """A progress line on stderr (stdout carries the figures)."""
    sys.stderr.write(f"bench-peers: {text}\n")
    sys.stderr.flush()


class Peers:
    """Where each peer's installation lives under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.dbos_python = self.root / "venv-dbos/bin/python"
        self.restate_python = self.root / "venv-restate/bin/python"
        self.restate_npm = self.root / "restate-npm"
        self.restate_server = (
            self.restate_npm
            / "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
        )
        self.postgres = PostgresCluster(self.root / "pg", say=say, settings=DURABLE_POSTGRES)

    def install(self) -> None:
        """Install whatever is missing or pinned differently."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._venv("venv-dbos", DBOS_PACKAGES)
        self._venv("venv-restate", RESTATE_PACKAGES)
        self._npm()

    def _venv(self, name: str, packages: tuple[str, ...]) -> None:
        venv = self.root / name
        stamp = venv / ".bench-peers"
        if stamp.exists() and stamp.read_text() == "\n".join(packages):
            return
        began = time.monotonic()
        shutil.rmtree(venv, ignore_errors=True)
        python = _base_python()
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        pip = [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
        ]
        subprocess.run([*pip, *packages], check=True)
        stamp.write_text("\n".join(packages))
        say(f"{name}: installed {' '.join(packages)} in {time.monotonic() - began:.0f} s")

    def _npm(self) -> None:
        stamp = self.restate_npm / ".bench-peers"
        if stamp.exists() and stamp.read_text() == RESTATE_SERVER and self.restate_server.exists():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("bench-peers: Restate's server comes from npm: install Node.js first")
        began = time.monotonic()
        self.restate_npm.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(self.restate_npm), "--ignore-scripts",
             "--no-audit", "--no-fund", "--loglevel=error", RESTATE_SERVER],
            check=True,
        )  # fmt: skip
        if not self.restate_server.exists():
            raise SystemExit(f"bench-peers: npm installed no binary at {self.restate_server}")
        stamp.write_text(RESTATE_SERVER)
        say(f"restate-server: installed {RESTATE_SERVER} in {time.monotonic() - began:.0f} s")


def _base_python() -> str:
    """The interpreter the project's venv was made from (a venv made from a venv works, but
    would tie the peers to this one's lifetime)."""
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    return str(base) if base.exists() else sys.executable
