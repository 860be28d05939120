"""What the deployment files say, and what the code they run actually reads and serves.

The tests compare the two: an env var the code never reads, a probe on a path or port nobody
serves, or a command no distribution installs would all deploy fine and fail silently.
"""

from __future__ import annotations

import ast
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aion_common.runtime.health import LIVE_PATHS, READY_PATH
from aion_common.settings import Settings
from aion_engine.health import ENDPOINT_ENV_PREFIX as ENGINE_PREFIX
from aion_ingress.options import IngressOptions
from aion_projector.api import OPEN_PATHS
from aion_projector.health import ENDPOINT_ENV_PREFIX as PROJECTOR_PREFIX
from aion_projector.health import ready_lag_from_env
from aion_scheduler.options import SchedulerOptions
from aion_watcher.config import WatcherConfig
from aion_worker.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"

HEALTH_SERVER_PATHS = frozenset({*LIVE_PATHS, READY_PATH})


class _Recorder(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.names.add(key)
        return default

    def __contains__(self, key: object) -> bool:
        self.names.add(str(key))
        return False


def _recorded() -> dict[str, set[str]]:
    """Names the settings readers look up, by the process kind that calls them."""
    from aion_common.runtime.health import HealthEndpoint

    common = _Recorder()
    Settings.from_env(common)
    watcher = _Recorder()
    WatcherConfig.from_env(watcher)
    engine = _Recorder()
    HealthEndpoint.from_env(ENGINE_PREFIX, engine)
    projector = _Recorder()
    HealthEndpoint.from_env(PROJECTOR_PREFIX, projector)
    ready_lag_from_env(projector)
    worker = _Recorder()
    WorkerConfig.from_env(worker)
    ingress = _Recorder()
    IngressOptions.from_env(ingress)
    scheduler = _Recorder()
    SchedulerOptions.from_env(scheduler)
    return {
        "ingress": ingress.names,
        "scheduler": scheduler.names,
        "common": common.names,
        "watcher": watcher.names,
        "worker": worker.names,
        "engine": engine.names,
        "projector": projector.names,
    }


def _literals(paths: Iterator[Path]) -> set[str]:
    """Every string constant that is exactly an ``AION_*`` name (``os.environ.get("AION_X")``)."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("AION_")
                and node.value.replace("_", "").isalnum()
                and node.value.isupper()
            ):
                found.add(node.value)
    return found


def _sources(root: Path, *, skip: tuple[str, ...] = ()) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if not any(rel.startswith(s) for s in skip):
            yield path


def env_read_by() -> dict[str, frozenset[str]]:
    """Per process kind (engine, watcher, projector, api): the ``AION_*`` names it reads."""
    recorded = _recorded()
    common_src = ROOT / "libs/aion_common/src/aion_common"
    common = recorded["common"] | _literals(_sources(common_src, skip=("testing/",)))
    projector_src = ROOT / "services/projector/src/aion_projector"
    return {
        "engine": frozenset(
            common | recorded["engine"] | _literals(_sources(ROOT / "services/engine/src"))
        ),
        "watcher": frozenset(
            common
            | recorded["watcher"]
            | _literals(_sources(ROOT / "services/watcher/src", skip=("aion_watcher/bench",)))
        ),
        "projector": frozenset(
            common
            | recorded["projector"]
            | _literals(_sources(projector_src, skip=("api/", "bench")))
        ),
        "api": frozenset(common | _literals(_sources(projector_src / "api"))),
        "ingress": frozenset(
            common | recorded["ingress"] | _literals(_sources(ROOT / "services/ingress/src"))
        ),
        "scheduler": frozenset(
            common | recorded["scheduler"] | _literals(_sources(ROOT / "services/scheduler/src"))
        ),
        # a worker also reads what the activity modules it loads read (the examples' here)
        "worker": frozenset(
            common
            | recorded["worker"]
            | _literals(_sources(ROOT / "services/worker/src"))
            | _literals(_sources(ROOT / "examples"))
        ),
    }


def console_scripts() -> dict[str, str]:
    """Console script -> the distribution that installs it (every pyproject in the repo)."""
    scripts: dict[str, str] = {}
    for pyproject in sorted(ROOT.glob("*/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        for script in project.get("scripts", {}):
            scripts[script] = project["name"]
    return scripts


@dataclass(frozen=True)
class Process:
    """What one container runs: its kind and the port its probes should use."""

    kind: str  # engine | watcher | projector | api | worker | ingress | scheduler
    argv: tuple[str, ...]
    env: Mapping[str, str]

    @property
    def health_port(self) -> int:
        """The port the process serves health on, as its own configuration says."""
        if self.kind == "api":
            return int(_flag(self.argv, "--port", "8080"))
        var = {
            "engine": "AION_ENGINE_PORT",
            "watcher": "AION_WATCHER_PORT",
            "worker": "AION_WORKER_PORT",
            "ingress": "AION_INGRESS_PORT",
            "scheduler": "AION_SCHEDULER_PORT",
        }.get(self.kind, "AION_PROJECTOR_PORT")
        return int(self.env.get(var, "0"))

    @property
    def health_host(self) -> str:
        """The address it binds."""
        if self.kind == "api":
            return _flag(self.argv, "--host", "127.0.0.1")
        var = f"AION_{self.kind.upper()}_HOST"
        return self.env.get(var, "127.0.0.1")

    @property
    def served_paths(self) -> frozenset[str]:
        """Paths that answer without a token (probes carry none)."""
        return frozenset(OPEN_PATHS) if self.kind == "api" else HEALTH_SERVER_PATHS


def _flag(argv: tuple[str, ...], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv else default


def process_kind(argv: list[str] | tuple[str, ...]) -> str:
    """engine / watcher / projector / api from a container command; ValueError otherwise."""
    args = tuple(argv)
    kinds = {
        "aion-engine": "engine",
        "aion-watcher": "watcher",
        "aion-projector": "projector",
        "aion-worker": "worker",
        "aion-ingress": "ingress",
        "aion-scheduler": "scheduler",
    }
    if args and args[0] in kinds:
        return kinds[args[0]]
    if args[:3] == ("python", "-m", "aion_projector.api"):
        return "api"
    raise ValueError(f"not an aion service command: {shlex.join(args)}")


def load_compose() -> dict[str, Any]:
    """docker-compose.yml with its anchors and merge keys resolved."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_processes() -> dict[str, Process]:
    """Compose service name -> the aion process it runs (Kafka and PostgreSQL left out)."""
    out = {}
    for name, service in load_compose()["services"].items():
        command = service.get("command")
        if command is None:
            continue
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        out[name] = Process(process_kind(argv), tuple(argv), dict(service.get("environment", {})))
    return out


def k8s_files() -> list[Path]:
    """Every manifest in deploy/k8s except the kustomization itself."""
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """(file, resource) for every document of every manifest."""
    return [
        (path, doc) for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc
    ]


def kustomization() -> dict[str, Any]:
    """deploy/k8s/kustomization.yaml."""
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data
