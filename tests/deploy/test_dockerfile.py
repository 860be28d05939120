"""deploy/Dockerfile (no Docker engine here): stages, user, and that it ships what runs."""

from __future__ import annotations

import fnmatch
import re

from .model import DOCKERFILE, ROOT, compose_processes, console_scripts, load_compose

_TEXT = DOCKERFILE.read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", _TEXT)
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_multi_stage_with_an_unprivileged_runtime() -> None:
    build, runtime = _stages()
    assert build[0][1].endswith("AS build")
    assert runtime[0][1].endswith("AS runtime")
    assert any("pip wheel" in args for op, args in build if op == "RUN")
    users = [args for op, args in runtime if op == "USER"]
    assert users == ["10001:10001"], "the last stage runs as a non-root numeric user"
    assert not any(op == "COPY" and "/wheels" in args for op, args in runtime), "wheels not kept"


def test_every_copied_path_exists_and_is_not_ignored() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    included = [line[1:] for line in ignore if line.startswith("!")]
    for op, args in _instructions():
        if op != "COPY" or args.startswith("--from"):
            continue
        source = args.split()[0]
        for name, default in re.findall(r"^ARG (\w+)=(\S+)$", _TEXT, re.MULTILINE):
            source = source.replace(f"${{{name}}}", default)
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert any(fnmatch.fnmatch(source, pattern) for pattern in included), source


def test_the_image_ships_schemas_examples_and_every_distribution() -> None:
    """Every distribution under libs/ and services/ (a new service needs no edit here)."""
    build, runtime = _stages()
    copies = [args.split() for op, args in build if op == "COPY"]
    assert ["libs", "./libs"] in copies
    assert ["services", "./services"] in copies
    wheel = next(args for op, args in build if op == "RUN" and "pip wheel" in args)
    assert "./libs/* ./services/*" in wheel
    install = next(args for op, args in runtime if op == "RUN" and "--no-index" in args)
    assert "/wheels/*.whl" in install, "every wheel the build stage made is installed"
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert {"!libs", "!services"} <= set(ignore)
    dists = {p.parent.name for p in ROOT.glob("services/*/pyproject.toml")}
    assert {"engine", "watcher", "projector"} <= dists
    copies = [args.split() for op, args in runtime if op == "COPY" and "--from" not in args]
    assert ["schemas", "/opt/aion/schemas"] in copies
    assert ["examples", "/opt/aion/app/examples"] in copies
    env = " ".join(args for op, args in runtime if op == "ENV")
    assert "AION_SCHEMAS_DIR=/opt/aion/schemas" in env
    assert "PYTHONPATH=/opt/aion/app" in env, "examples importable as `examples`"
    scripts = console_scripts()
    for name, process in compose_processes().items():
        command = process.argv[0]
        if command == "python":
            module = process.argv[2]
            assert (
                ROOT / "services/projector/src" / module.replace(".", "/") / "__main__.py"
            ).is_file()
        else:
            assert command in scripts, f"{name}: no distribution installs {command}"


def test_no_frontend_image_is_pulled() -> None:
    """No `# syntax=` line: BuildKit's built-in frontend runs it (no registry needed)."""
    for dockerfile in (
        DOCKERFILE,
        *ROOT.glob("deploy/*/Dockerfile"),
        *ROOT.glob("deploy/*/*.Dockerfile"),
    ):
        first = dockerfile.read_text().splitlines()[0]
        assert not first.replace(" ", "").startswith("#syntax="), dockerfile


def test_every_base_is_a_build_argument_with_a_public_default() -> None:
    for dockerfile in (
        DOCKERFILE,
        *ROOT.glob("deploy/*/Dockerfile"),
        *ROOT.glob("deploy/*/*.Dockerfile"),
    ):
        text = dockerfile.read_text()
        for line in text.splitlines():
            if line.startswith("FROM "):
                assert line.split()[1].startswith("${"), f"{dockerfile}: {line}"
        defaults = re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, re.MULTILINE)
        assert defaults, dockerfile
        for _name, default in defaults:
            assert default in {"python:3.11-slim", "debian:bookworm-slim"}, (dockerfile, default)


def test_the_exposed_ports_cover_every_health_port() -> None:
    exposed = {int(p) for op, args in _instructions() if op == "EXPOSE" for p in args.split()}
    ports = {p.health_port for p in compose_processes().values()}
    assert ports <= exposed
    assert load_compose()["services"]["api"]["ports"] == ["127.0.0.1:${AION_API_PORT:-8080}:8080"]
