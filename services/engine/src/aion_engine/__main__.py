"""``aion-engine``: run an engine instance.

Workflow modules come from ``--workflows MODULE`` (repeatable) and/or ``AION_WORKFLOWS``
(comma-separated); everything else from the ``AION_*`` settings. ``AION_ENGINE_PORT`` (and
``AION_ENGINE_HOST``, default 127.0.0.1) opens ``/health``, ``/health/ready`` and ``/metrics``
(see :mod:`aion_engine.health`). ``kill -USR1 <pid>`` logs every asyncio task with its stack.

Group membership (decision 22): ``AION_ENGINE_STATIC_MEMBERSHIP`` = ``on``/``off``/``auto``
(default ``auto``: on exactly when ``AION_INSTANCE_ID`` is set to something other than its
default, ``aion-1``). A static member joins as ``<prefix>.engine.<AION_INSTANCE_ID>``, so an
instance restarted under the same id takes its partitions back at once; the id must then be
unique per running instance. ``AION_ENGINE_SESSION_TIMEOUT_MS`` (default 10000) is how long a
vanished instance keeps its partitions.

Versions (decision 36): the modules named by ``--workflows`` are this engine's own code, known
as the version their files hash to (what ``aion deploy`` of their directory uploads); every
other version comes from the ``<prefix>.packages`` topic and is unpacked under
``AION_PACKAGE_DIR`` (default: a fresh temporary directory removed on exit — packages always
come back from the topic, never from a previous process's disk).

State (issue 21, decision 47): ``AION_ENGINE_CHANGELOG`` = ``auto`` (default: on whenever Kafka
transactions are), ``on`` or ``off`` (rebuild every partition from the event log, as before
changelogs); ``AION_ENGINE_CLOSED_CACHE`` (default 10000) closed workflows kept in memory
beside the open ones (the rest are read from the local store under ``AION_STATE_DIR`` when a
command needs them); ``AION_ENGINE_STANDBYS`` (default 0) keeps warm copies of partitions this
instance does not own.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aion_common.domain import AionError
from aion_common.packages import PackageError, package_of_modules, user_modules
from aion_common.runtime.debug import install_task_dump
from aion_common.runtime.health import HealthEndpoint
from aion_common.runtime.logging import configure_logging
from aion_common.runtime.loop import run as run_loop
from aion_common.runtime.user_modules import EXIT_USER_CODE
from aion_common.settings import (
    Settings,
    SettingsError,
    session_timeout_ms_from_env,
    whole_from_env,
    whole_option,
)
from aion_engine.core import DEFAULT_MAX_RESIDENT, MAX_RESIDENT
from aion_engine.health import ENDPOINT_ENV_PREFIX, serve
from aion_engine.publish_topics import PublishTopics
from aion_engine.registry import WorkflowRegistry, load_modules
from aion_engine.service import EngineService
from aion_engine.versions import Versions

_log = logging.getLogger("aion.engine")
_MAX_CLOSED_CACHE = 10_000_000


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aion-engine", description=__doc__)
    parser.add_argument(
        "--workflows",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE to register its workflows (repeatable)",
    )
    parser.add_argument(
        "--max-resident",
        type=whole_option(
            minimum=0,
            maximum=MAX_RESIDENT,
            what="a whole number of workflows",
            why="per partition, each a suspended coroutine in memory; 0: replay every command",
        ),
        default=DEFAULT_MAX_RESIDENT,
        metavar="N",
        help="workflow coroutines each partition keeps suspended in memory, the rest replayed "
        f"when a command comes (default {DEFAULT_MAX_RESIDENT}; 0 to {MAX_RESIDENT})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only load the workflow modules and settings, print the types and exit "
        f"(0, or {EXIT_USER_CODE} with the reason on stderr)",
    )
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True, slots=True)
class StateOptions:
    """How the engine keeps its state (see the module docstring)."""

    changelog: bool | None
    closed_cache: int
    standbys: int


def state_options_from_env(environ: Mapping[str, str]) -> StateOptions:
    """``AION_ENGINE_CHANGELOG``, ``AION_ENGINE_CLOSED_CACHE``, ``AION_ENGINE_STANDBYS``."""
    raw = environ.get("AION_ENGINE_CHANGELOG", "auto").strip().lower()
    choices: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
    if raw not in choices:
        raise SettingsError(f"AION_ENGINE_CHANGELOG={raw!r}: expected auto, on or off")
    closed_cache = whole_from_env(
        environ,
        "AION_ENGINE_CLOSED_CACHE",
        10_000,
        minimum=0,
        maximum=_MAX_CLOSED_CACHE,
        what="a whole number of closed workflows",
        why="each is held in memory; the rest are read from the local store",
    )
    standbys = whole_from_env(
        environ,
        "AION_ENGINE_STANDBYS",
        0,
        minimum=0,
        maximum=1,
        why="1 keeps a warm store of every partition this engine does not own",
    )
    return StateOptions(
        changelog=choices[raw],
        closed_cache=closed_cache,
        standbys=standbys,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    """How the engine joins its consumer group."""

    static: bool
    session_timeout_ms: int


_DEFAULT_INSTANCE_ID = next(
    f.default for f in dataclasses.fields(Settings) if f.name == "instance_id"
)


def membership_from_env(environ: Mapping[str, str], settings: Settings) -> Membership:
    """``AION_ENGINE_STATIC_MEMBERSHIP`` and ``AION_ENGINE_SESSION_TIMEOUT_MS``, checked."""
    raw = environ.get("AION_ENGINE_STATIC_MEMBERSHIP", "auto").strip().lower()
    if raw in ("on", "true", "1"):
        static = True
    elif raw in ("off", "false", "0"):
        static = False
    elif raw == "auto":
        static = settings.instance_id != _DEFAULT_INSTANCE_ID
    else:
        raise SettingsError(f"AION_ENGINE_STATIC_MEMBERSHIP={raw!r}: expected on, off or auto")
    timeout_ms = session_timeout_ms_from_env(environ, "AION_ENGINE_SESSION_TIMEOUT_MS")
    return Membership(static=static, session_timeout_ms=timeout_ms)


def _local_version(modules: list[str]) -> str:
    """The version the ``--workflows`` modules' files hash to ("" when they cannot be
    versioned: runs then start on this engine's code, unversioned, as before versions)."""
    if not user_modules(modules):
        return ""
    try:
        return package_of_modules(modules).version
    except PackageError as err:
        _log.warning("the workflow modules are not versioned: %s", err)
        return ""


def publish_create_topics(environ: Mapping[str, str]) -> bool:
    """``AION_PUBLISH_CREATE_TOPICS``: create the topics ``ctx.publish`` names when missing
    (on), or block the runs that publish to them (off, the default)."""
    raw = environ.get("AION_PUBLISH_CREATE_TOPICS", "off").strip().lower()
    if raw in {"on", "true", "1"}:
        return True
    if raw in {"off", "false", "0", ""}:
        return False
    raise SettingsError(f"AION_PUBLISH_CREATE_TOPICS={raw!r}: expected on or off")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-engine`` console script."""
    args = _parse(argv)
    configure_logging(args.log_level)
    modules = [*args.workflows]
    modules += [m.strip() for m in os.environ.get("AION_WORKFLOWS", "").split(",") if m.strip()]
    try:
        settings = Settings.from_env()
        endpoint = HealthEndpoint.from_env(ENDPOINT_ENV_PREFIX)
        membership = membership_from_env(os.environ, settings)
        state = state_options_from_env(os.environ)
        registry = WorkflowRegistry()
        types = load_modules(modules, registry)
        local_version = _local_version(modules)
        create_topics = publish_create_topics(os.environ)
    except (SettingsError, AionError) as err:
        if args.check:
            print(err, file=sys.stderr)  # noqa: T201 - for people: the text, no JSON
            return EXIT_USER_CODE
        _log.error("engine refused to start: %s", err)  # the message is the report
        return EXIT_USER_CODE
    if args.check:
        print(f"workflow types: {', '.join(types) or '(none)'}")  # noqa: T201 - its output
        return 0
    _log.info(
        "workflow types loaded",
        extra={"modules": modules, "workflow_types": list(types), "version": local_version},
    )
    configured = os.environ.get("AION_PACKAGE_DIR", "").strip()
    package_dir = Path(configured) if configured else Path(tempfile.mkdtemp(prefix="aion-pkg-"))
    versions = Versions(registry, local_version=local_version, package_dir=package_dir)
    service = EngineService(
        settings,
        registry,
        max_resident=args.max_resident,
        static_membership=membership.static,
        session_timeout_ms=membership.session_timeout_ms,
        versions=versions,
        changelog=state.changelog,
        closed_cache=state.closed_cache,
        standbys=state.standbys,
        publish_topics=PublishTopics(settings, create=create_topics),
    )

    async def serve_with_task_dump() -> int:
        install_task_dump(asyncio.get_running_loop())
        return await serve(service, endpoint, settings.instance_id)

    try:
        code = run_loop(serve_with_task_dump())
    except AionError as err:
        _log.error("engine stopped: %s", err)
        return 1
    finally:
        if not configured:
            shutil.rmtree(package_dir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
