"""A private PostgreSQL cluster for tests, under ``<repo>/.aion/pg``.

``python -m aion_common.testing.postgres provision`` (``make postgres``) installs PostgreSQL
with apt when it is missing, creates the cluster with superuser ``aion``/``aion``, starts it
on a free 127.0.0.1 port and writes its SQLAlchemy URL to ``.aion/pg/url``; run again, it
only starts a stopped cluster or prints the URL. ``stop`` stops it. With
``AION_TEST_DATABASE_URL`` set, provisioning only checks that URL connects.

The cluster trades durability for speed (``fsync=off``): it holds test data only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aion_common.testing._support import (
    ProvisionError,
    find_repo_root,
    free_port,
    port_is_free,
    run_command,
    run_coroutine,
)

__all__ = [
    "ENV_URL",
    "PostgresCluster",
    "check_connection",
    "create_database",
    "drop_database",
    "read_provisioned_url",
    "redact",
]

ENV_URL = "AION_TEST_DATABASE_URL"
_OS_USER = "postgres"
_USER = "aion"
_PASSWORD = "aion"  # noqa: S105 - a throwaway test cluster bound to 127.0.0.1
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}

Say = Callable[[str], None]


def _quiet(line: str) -> None:
    """Discard a progress line."""


class PostgresCluster:
    """The cluster under ``root`` (default ``<repo>/.aion/pg``): data, socket dir, log, URL."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        say: Say = _quiet,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``settings`` override the test defaults in ``postgresql.conf`` syntax (the peer
        benchmark runs a cluster with PostgreSQL's own durability: ``fsync = on`` …)."""
        self.root = (root or find_repo_root() / ".aion/pg").resolve()
        self._settings = {**_SETTINGS, **(settings or {})}
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log_path = self.root / "postgres.log"
        self.url_file = self.root / "url"
        self._say = say
        self._bin: Path | None = None

    def provision(self) -> str:
        """Install, create and start the cluster as needed; return its URL."""
        started = time.monotonic()
        self._bin = self._bin or _ensure_installed(self._say)
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if self.running():
            self._say(f"postgres: cluster in {self.data_dir} is already running")
        else:
            self._start()
        url = self._url(self._running_port())
        problem = check_connection(url)
        if problem is not None:
            raise ProvisionError(f"PostgreSQL started but {redact(url)} refuses: {problem}")
        self.url_file.write_text(url + "\n")
        self._say(f"postgres: ready in {time.monotonic() - started:.1f} s at {redact(url)}")
        self._say(f"postgres: URL written to {self.url_file}; log {self.log_path}")
        return url

    def running(self) -> bool:
        """Whether the cluster's postmaster is up (``pg_ctl status``)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        try:
            self._pg("pg_ctl", "status", "-D", str(self.data_dir), what="checking PostgreSQL")
        except ProvisionError:
            return False
        return True

    def stop(self) -> bool:
        """Stop the cluster if it runs (fast shutdown); return whether it was running."""
        if not self.running():
            return False
        seconds = self._pg(
            "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", what="stopping"
        )
        self._say(f"postgres: stopped in {seconds:.1f} s")
        return True

    def _init(self) -> None:
        for directory in (self.root, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
            self._give_to_os_user(directory)
        self._check_reachable()
        password_file = self.root / "initdb-password"
        password_file.write_text(_PASSWORD + "\n")
        self._give_to_os_user(password_file)
        try:
            seconds = self._pg(
                "initdb", "-D", str(self.data_dir), "-U", _USER, f"--pwfile={password_file}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                "--no-locale", "--no-sync", what="creating the PostgreSQL cluster (initdb)",
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude_if_exists = 'aion.conf'\n")
        self._say(f"postgres: created cluster in {self.data_dir} in {seconds:.1f} s")

    def _start(self) -> None:
        port = self._configured_port()
        if port is None or not port_is_free(port):
            port = free_port()
        self._write_settings(port)
        seconds = self._pg(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
            "-t", "60", what=f"starting PostgreSQL (log {self.log_path})",
        )  # fmt: skip
        self._say(f"postgres: started on 127.0.0.1:{port} in {seconds:.1f} s")

    def _write_settings(self, port: int) -> None:
        settings = {
            **self._settings,
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        conf = self.data_dir / "aion.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()))
        self._give_to_os_user(conf)

    def _configured_port(self) -> int | None:
        conf = self.data_dir / "aion.conf"
        if not conf.exists():
            return None
        for line in conf.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port" and value.strip().isdigit():
                return int(value.strip())
        return None

    def _running_port(self) -> int:
        # postmaster.pid's fourth line is the port the running server listens on.
        lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        if len(lines) < 4 or not lines[3].strip().isdigit():  # noqa: PLR2004
            raise ProvisionError(f"cannot read the port from {self.data_dir / 'postmaster.pid'}")
        return int(lines[3])

    def _url(self, port: int) -> str:
        return f"postgresql+asyncpg://{_USER}:{_PASSWORD}@127.0.0.1:{port}/postgres"

    def _pg(self, tool: str, *args: str, what: str) -> float:
        assert self._bin is not None or tool == "pg_ctl"
        self._bin = self._bin or _ensure_installed(self._say)
        argv = [str(self._bin / tool), *args]
        if _as_root():
            # initdb and pg_ctl refuse to run as root.
            argv = ["runuser", "-u", _OS_USER, "--", *argv]
        return run_command(argv, what=what, timeout=120)

    def _give_to_os_user(self, path: Path) -> None:
        if _as_root():
            shutil.chown(path, user=_OS_USER, group=_OS_USER)

    def _check_reachable(self) -> None:
        if not _as_root():
            return
        try:
            run_command(["runuser", "-u", _OS_USER, "--", "test", "-w", str(self.root)], what="")
        except ProvisionError as err:
            raise ProvisionError(
                f"the {_OS_USER!r} OS user cannot write {self.root}: a parent directory is not "
                "searchable by others (chmod o+x it), or set AION_TEST_DATABASE_URL instead"
            ) from err


def _as_root() -> bool:
    return os.geteuid() == 0


def find_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL bin dir, else the one holding ``initdb`` on PATH."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if found:
        return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _ensure_installed(say: Say) -> Path:
    bin_dir = find_bin_dir()
    if bin_dir is not None:
        say(f"postgres: using installed PostgreSQL in {bin_dir}")
        return bin_dir
    if not _as_root() or shutil.which("apt-get") is None:
        raise ProvisionError(
            "PostgreSQL is not installed and this is not a root Debian machine: install it "
            f"(e.g. apt-get install postgresql) or set {ENV_URL}"
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    say("postgres: installing the Debian postgresql package (apt-get)…")
    seconds = run_command(["apt-get", "update"], what="apt-get update", env=env)
    seconds += run_command(
        ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
        what="installing PostgreSQL with apt-get",
        env=env,
    )
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ProvisionError("apt-get installed postgresql but no initdb was found")
    say(f"postgres: installed PostgreSQL in {bin_dir} in {seconds:.1f} s")
    return bin_dir


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - optional dependency

    return make_url(url).render_as_string(hide_password=True)


def _asyncpg_dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - optional dependency

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _asyncpg() -> Any:
    # Imported on use: asyncpg is a test dependency, and it ships no type information.
    return importlib.import_module("asyncpg")


def check_connection(url: str, timeout: float = 5.0) -> str | None:
    """None if ``url`` accepts a connection and ``SELECT 1``, else what went wrong."""
    asyncpg = _asyncpg()

    async def probe() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=timeout)
        try:
            await connection.execute("SELECT 1")
        finally:
            await connection.close()

    try:
        run_coroutine(probe)
    except (OSError, TimeoutError, asyncpg.PostgresError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _admin(url: str, statement: str) -> None:
    asyncpg = _asyncpg()

    async def execute() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    run_coroutine(execute)


def create_database(url: str, name: str) -> str:
    """Create database ``name`` (letters, digits, ``_``) on ``url``'s server; return its URL."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and '_'")
    _admin(url, f'CREATE DATABASE "{name}"')
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - optional dependency

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever still uses it."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"database name {name!r}: use letters, digits and '_'")
    _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def read_provisioned_url(repo_root: Path | None = None) -> str | None:
    """The URL ``make postgres`` wrote to ``.aion/pg/url``, if any."""
    try:
        root = repo_root or find_repo_root()
    except ProvisionError:
        return None
    url_file = root / ".aion/pg/url"
    return url_file.read_text().strip() or None if url_file.exists() else None


def _check_external(url: str, say: Say) -> None:
    problem = check_connection(url)
    if problem is not None:
        raise ProvisionError(f"{ENV_URL}={redact(url)} does not connect: {problem}")
    say(f"postgres: {ENV_URL}={redact(url)} connects; nothing to provision")


def main(argv: list[str] | None = None) -> int:
    """``provision`` or ``stop`` the test cluster; print progress and the URL."""
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.postgres")
    parser.add_argument("command", choices=["provision", "stop"])
    parser.add_argument("--root", type=Path, help="cluster directory (default: <repo>/.aion/pg)")
    args = parser.parse_args(argv)
    say: Say = lambda line: print(line, flush=True)  # noqa: E731, T201 - CLI progress
    try:
        if args.command == "stop":
            if not PostgresCluster(args.root, say=say).stop():
                say("postgres: not running")
            return 0
        external = os.environ.get(ENV_URL)
        if external:
            _check_external(external, say)
        else:
            say(PostgresCluster(args.root, say=say).provision())
    except ProvisionError as err:
        say(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
