"""deploy/k8s: every resource valid against the Kubernetes OpenAPI schemas (strict, offline),
and consistent with the code and with each other."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from .model import K8S, Process, env_read_by, k8s_documents, k8s_files, kustomization, process_kind

# The oldest Kubernetes we claim (policy/v1 PDBs, seccompProfile fields) and the newest the
# validator bundles.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def _validate(doc: dict[str, Any], version: str) -> None:
    """Strict: unknown keys are errors. An unknown kind/apiVersion is an error too."""
    kubernetes_validate.validate(doc, version, strict=True)


def _ids() -> list[str]:
    return [f"{path.name}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in k8s_documents()]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("path", "doc"), k8s_documents(), ids=_ids())
def test_resource_matches_its_schema(path: Path, doc: dict[str, Any], version: str) -> None:
    assert "namespace" not in doc["metadata"], f"{path.name}: manifests are namespace-less"
    _validate(doc, version)


def _deployment(name: str) -> dict[str, Any]:
    for _, doc in k8s_documents():
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise AssertionError(f"no Deployment {name}")


def test_a_typo_in_a_probe_fails_validation() -> None:
    """The validator really runs: a misspelt key deep in a pod template is refused."""
    doc = _deployment("aion-engine")
    probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGet"]["paht"] = probe["httpGet"].pop("path")
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        _validate(doc, VERSIONS[-1])


def test_a_wrong_type_and_an_unknown_kind_fail_validation() -> None:
    doc = _deployment("aion-engine")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError, match="two"):
        _validate(doc, VERSIONS[-1])
    doc = _deployment("aion-engine")
    doc["kind"] = "Deploymnet"
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate(doc, VERSIONS[-1])


def test_kustomization_lists_every_manifest_and_only_those() -> None:
    listed = kustomization()["resources"]
    assert sorted(listed) == sorted(p.name for p in k8s_files())
    assert len(listed) == len(set(listed))
    images = {i["name"] for i in kustomization()["images"]}
    used = {c["image"] for c in _containers()}
    assert used == images == {"aion"}, "the kustomization pins the image every container uses"


def _docs(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


def _containers() -> list[dict[str, Any]]:
    return [c for d in _docs("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


def _config() -> tuple[dict[str, str], dict[str, str]]:
    (configmap,) = _docs("ConfigMap")
    (secret,) = _docs("Secret")
    return configmap["data"], secret["stringData"]


def _process(container: dict[str, Any]) -> Process:
    config, _ = _config()
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "aion-config"
        env.update(config)
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "<from a reference>")
    argv = tuple(container["command"])
    return Process(process_kind(argv), argv, env)


def test_one_deployment_per_service_with_two_engines() -> None:
    kinds = {}
    for deployment in _docs("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        kinds[_process(container).kind] = deployment["spec"]["replicas"]
    assert kinds == {
        "engine": 2,
        "watcher": 1,
        "projector": 1,
        "api": 2,
        "worker": 2,
        "scheduler": 2,
        "ingress": 2,
    }


def test_every_aion_variable_is_one_the_service_reads() -> None:
    read = env_read_by()
    config, secret = _config()
    consumers: dict[str, set[str]] = {}
    for container in _containers():
        process = _process(container)
        explicit = {v["name"] for v in container.get("env", [])}
        unknown = {v for v in explicit if v.startswith("AION_")} - read[process.kind]
        assert not unknown, f"{container['name']} sets variables nothing reads: {unknown}"
        if container.get("envFrom"):
            unread = set(config) - read[process.kind]
            assert not unread, f"{container['name']} gets ConfigMap keys it never reads: {unread}"
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == "aion-secrets"
                assert ref["key"] in secret, f"{ref['key']} is not in the Secret"
                consumers.setdefault(ref["key"], set()).add(process.kind)
    assert set(secret) == set(consumers), "every Secret key is used"
    assert consumers["AION_API_TOKEN"] == {"api"}


def test_probes_use_the_paths_and_ports_each_service_serves() -> None:
    for container in _containers():
        process = _process(container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert process.health_port in ports.values(), f"{container['name']}: port not declared"
        assert process.health_host == "0.0.0.0", "the kubelet probes the pod IP"
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container[kind]
            action = probe.get("httpGet") or probe["tcpSocket"]
            port = action["port"]
            number = ports[port] if isinstance(port, str) else port
            assert number == process.health_port, f"{container['name']} {kind} port {port}"
            if "httpGet" in probe:
                assert probe["httpGet"]["path"] in process.served_paths, (container["name"], kind)
        ready = container["readinessProbe"].get("httpGet", {}).get("path")
        assert ready is not None, f"{container['name']}: readiness is an HTTP check"
        assert container["resources"]["requests"], f"{container['name']}: resources"
        assert "limits" in container["resources"]


def test_the_engine_disruption_budget_selects_the_engine_pods() -> None:
    (pdb,) = _docs("PodDisruptionBudget")
    engine = _deployment("aion-engine")
    selector = pdb["spec"]["selector"]["matchLabels"]
    labels = engine["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) == 1 or pdb["spec"].get("minAvailable") == 1
    assert engine["spec"]["replicas"] >= 2, "a budget of one needs two engines"


def test_services_select_pods_and_target_declared_ports() -> None:
    deployments = _docs("Deployment")
    names = set()
    for service in _docs("Service"):
        selector = service["spec"]["selector"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{service['metadata']['name']} selects {len(matched)}"
        (container,) = matched[0]["spec"]["template"]["spec"]["containers"]
        declared = {p["name"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in declared, service["metadata"]["name"]
        names.add(_process(container).kind)
    assert names == {"api", "engine", "watcher", "projector", "scheduler", "ingress"}, (
        "the API and each metrics port"
    )


def test_pods_run_as_the_images_unprivileged_user() -> None:
    for deployment in _docs("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # deploy/Dockerfile
    assert (K8S.parent / "Dockerfile").read_text().count("USER 10001:10001") == 1


def test_the_manifests_deploy_the_image_make_images_builds() -> None:
    """Same image as compose: kustomize's aion:<version> is a tag `make images` gives aion:dev."""
    from aion_common.testing.images import release_image

    (image,) = kustomization()["images"]
    assert image["name"] == "aion"
    assert f"{image['newName']}:{image['newTag']}" == release_image(K8S.parents[1])
    for deployment in _docs("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "aion", deployment["metadata"]["name"]
