"""docker-compose.yml: valid against the compose-spec schema, and consistent with the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from aion.testing.containers import DEFAULT_IMAGE, DEFAULT_KAFKA_IMAGE
from aion_common.testing.images import AION_IMAGE, POSTGRES_IMAGE, kafka_image

from .model import COMPOSE, ROOT, compose_processes, env_read_by, load_compose

OVERRIDE = ROOT / "deploy" / "compose.local.yml"

# Any attempt to download a schema goes to a dead proxy: the validation must work offline.
_OFFLINE = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=_OFFLINE,
        check=False,
        timeout=120,
    )


def test_compose_file_matches_the_compose_spec() -> None:
    result = _check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_local_images_override_matches_the_compose_spec_and_the_built_images() -> None:
    """deploy/compose.local.yml: valid, and naming exactly the images `make images` builds."""
    result = _check_jsonschema(OVERRIDE)
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(OVERRIDE.read_text())["services"]
    assert set(services) == {"kafka", "postgres"}
    assert services["kafka"]["image"] == kafka_image(ROOT) == DEFAULT_KAFKA_IMAGE
    assert services["postgres"]["image"] == POSTGRES_IMAGE
    assert services["kafka"]["healthcheck"]["test"] == ["CMD", "/opt/kafka/bin/kafka-ready"]
    assert load_compose()["services"]["engine-1"]["image"] == AION_IMAGE == DEFAULT_IMAGE


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in load_compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond 127.0.0.1"


@pytest.mark.parametrize(
    ("good", "typo", "reported"),
    [
        # in an x- anchor: the merge key carries the typo into every aion service
        ("  restart: unless-stopped", "  restrat: unless-stopped", "'restrat'"),
        ("  interval: 5s", "  intreval: 5s", "'intreval'"),
        (
            "      kafka: {condition: service_healthy}",
            "      kafka: {condition: service_healty}",
            "'service_healty'",
        ),
    ],
)
def test_a_typo_fails_validation(tmp_path: Path, good: str, typo: str, reported: str) -> None:
    """The validator really runs: a broken copy of the file is refused, naming the problem."""
    text = COMPOSE.read_text()
    assert good in text, "the line to break is still in docker-compose.yml"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(good, typo, 1))
    result = _check_jsonschema(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout, result.stdout


def test_the_whole_system_is_there() -> None:
    services = load_compose()["services"]
    kinds = sorted(p.kind for p in compose_processes().values())
    assert kinds == [
        "api",
        "engine",
        "engine",
        "ingress",
        "projector",
        "scheduler",
        "watcher",
        "worker",
    ]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft"
    assert services["postgres"]["image"].startswith("postgres:")
    engines = [n for n, p in compose_processes().items() if p.kind == "engine"]
    ids = {compose_processes()[n].env["AION_INSTANCE_ID"] for n in engines}
    assert len(ids) == len(engines), "each engine instance has its own id"


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies() -> None:
    services = load_compose()["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
        for dep, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dep}"
            assert "healthcheck" in services[dep], f"{name} waits on {dep}, which has none"
    processes = compose_processes()
    for name, process in processes.items():
        needs = {"kafka"} | ({"postgres"} if "AION_DATABASE_URL" in process.env else set())
        assert needs <= set(services[name].get("depends_on", {})), f"{name} needs {needs}"


def test_health_checks_probe_what_each_service_serves() -> None:
    services = load_compose()["services"]
    for name, process in compose_processes().items():
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "aion_common.runtime.health"], test
        url = urlsplit(test[4])
        assert url.hostname == "127.0.0.1"
        assert url.port == process.health_port != 0, f"{name} probes a port it does not serve"
        assert url.path in process.served_paths, f"{name}: {url.path} is not served"
        assert process.health_host in {"0.0.0.0", "127.0.0.1"}


def test_every_aion_variable_is_one_the_service_reads() -> None:
    read = env_read_by()
    for name, process in compose_processes().items():
        unknown = {v for v in process.env if v.startswith("AION_")} - read[process.kind]
        assert not unknown, f"{name} ({process.kind}) sets variables nothing reads: {unknown}"


def test_services_run_the_image_built_from_deploy_dockerfile() -> None:
    services = load_compose()["services"]
    for name in compose_processes():
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
        assert services[name]["image"] == services["engine-1"]["image"], "one image for all"


def test_the_engines_workflow_modules_load() -> None:
    """AION_WORKFLOWS resolves on the image's PYTHONPATH (the repository root's copy)."""
    modules = {p.env["AION_WORKFLOWS"] for p in compose_processes().values() if p.kind == "engine"}
    assert modules == {"examples"}
    script = (
        "from aion_engine.registry import WorkflowRegistry, load_modules; "
        "import sys; types = load_modules(sys.argv[1].split(','), WorkflowRegistry()); "
        "print(len(types))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, "examples"],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 0, "the examples register workflow types"
