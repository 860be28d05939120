"""Build every aion image with no image registry: ``python -m aion_common.testing.images build``.

``make images`` runs it. In order:

1. The bases. ``debian:bookworm-slim`` and ``python:3.11-slim`` (``$AION_DEBIAN_IMAGE`` and
   ``$AION_PYTHON_IMAGE`` override them) are used when present or pullable; when one cannot be
   pulled, one line says so and a local substitute is built instead: ``aion-local/debian``
   from Debian's packages (``debootstrap --variant=minbase``, then ``docker import``) and
   ``aion-local/python`` from ``deploy/base/python.Dockerfile`` on it.
2. ``aion:dev`` from ``deploy/Dockerfile`` (``PYTHON_IMAGE`` build argument), with every
   distribution under ``libs/`` and ``services/`` and their dependencies as wheels built once
   on the host (``.aion/cache/images/wheelhouse``), so the build needs no package index.
3. ``aion-kafka:<version>`` from ``deploy/kafka/Dockerfile``: the Maven jars the test harness
   runs (``make kafka-jars``), a single KRaft node with a health check.
4. ``aion-postgres:15`` from ``deploy/postgres/Dockerfile``: Debian's PostgreSQL.

Every image carries the label ``dev.aion.inputs``: a sha-256 of its Dockerfile, the files it
copies, its build arguments and its base image's id. An image whose label matches is not
rebuilt. Each image's size is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aion_common.testing._support import ProvisionError, find_repo_root, run_command
from aion_common.testing.broker import ensure_jars, pinned_kafka_version
from aion_common.testing.dockerd import docker_cli, server_version

__all__ = [
    "AION_IMAGE",
    "INPUTS_LABEL",
    "POSTGRES_IMAGE",
    "ImageSet",
    "build_images",
    "image_exists",
    "kafka_image",
    "release_image",
]

INPUTS_LABEL = "dev.aion.inputs"
AION_IMAGE = "aion:dev"
POSTGRES_IMAGE = "aion-postgres:15"
LOCAL_DEBIAN = "aion-local/debian:bookworm"
LOCAL_PYTHON = "aion-local/python:3.11"
_SUITE = "bookworm"
# Trimmed from the debootstrapped root file system: nothing a container runs needs them.
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
         "usr/share/locale", "usr/share/info")  # fmt: skip
_CACHE = Path(".aion/cache/images")
_WHEELHOUSE = _CACHE / "wheelhouse"
_HASH_IGNORED = ("examples/user_project/",)

Say = Callable[[str], None]


def kafka_image(repo_root: Path) -> str:
    """``aion-kafka:<the Kafka version deploy/kafka/pom.xml pins>``."""
    return f"aion-kafka:{pinned_kafka_version(repo_root)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageSet:
    """The names of the images ``build_images`` made (or found up to date), and their sizes."""

    aion: str
    kafka: str
    postgres: str
    bases: Mapping[str, str]
    sizes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Recipe:
    name: str
    dockerfile: str
    context: str
    inputs: tuple[str, ...]
    args: Mapping[str, str]
    also_tagged: tuple[str, ...] = ()


def image_exists(name: str) -> bool:
    """Whether the Docker engine has an image called ``name``."""
    return _inspect(name, "{{.Id}}") is not None


def _inspect(name: str, template: str) -> str | None:
    cli = _cli()
    done = subprocess.run(  # noqa: S603 - argv built here
        [cli, "image", "inspect", "--format", template, name],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return done.stdout.strip() if done.returncode == 0 else None


def _cli() -> str:
    cli = docker_cli()
    if cli is None:
        raise ProvisionError("building images needs the `docker` client on PATH")
    return cli


def _build_cli() -> tuple[str, dict[str, str]]:
    """A client that builds with BuildKit: one with buildx, else a 20.10-era built-in one.

    A Docker 23+ client without the buildx plugin cannot use BuildKit (and the legacy builder
    cannot run ``RUN --mount``); Debian's 20.10 client has BuildKit built in.
    """
    candidates = dict.fromkeys(c for c in (docker_cli(), "/usr/bin/docker") if c)
    for cli in candidates:
        if not Path(cli).exists():
            continue
        buildx = subprocess.run(  # noqa: S603 - fixed argv
            [cli, "buildx", "version"], capture_output=True, check=False, timeout=30
        )
        if buildx.returncode == 0:
            return cli, {}
        version = subprocess.run(  # noqa: S603 - fixed argv
            [cli, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout.strip()
        major = re.match(r"(\d+)\.", version)
        if major and int(major.group(1)) < 23:  # noqa: PLR2004 - BuildKit built into the CLI
            return cli, {"DOCKER_BUILDKIT": "1"}
    raise ProvisionError(
        "no docker client here can build with BuildKit: install the buildx plugin, or Debian's "
        "docker.io (its 20.10 client has BuildKit built in)"
    )


def _files(repo_root: Path, paths: Iterable[str]) -> list[str]:
    """The files under ``paths`` git would see (tracked or untracked, not ignored), sorted."""
    paths = list(paths)
    if not paths:
        return []
    done = subprocess.run(  # noqa: S603 - argv built here
        ["git", "ls-files", "-co", "--exclude-standard", "--", *paths],  # noqa: S607
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    names = {line for line in done.stdout.splitlines() if line}
    return sorted(
        n
        for n in names
        if (repo_root / n).is_file() and not any(n.startswith(p) for p in _HASH_IGNORED)
    )


def _digest(repo_root: Path, files: Iterable[str], extra: Mapping[str, str]) -> str:
    sha = hashlib.sha256()
    for name in files:
        path = repo_root / name
        sha.update(f"{name}\0{path.stat().st_mode & 0o111}\0".encode())
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    sha.update(json.dumps(dict(sorted(extra.items()))).encode())
    return sha.hexdigest()


class _Builder:
    def __init__(self, repo_root: Path, say: Say, *, force: bool = False) -> None:
        self.root = repo_root
        self.say = say
        self.force = force
        self.cache = repo_root / _CACHE
        self.cache.mkdir(parents=True, exist_ok=True)

    # -- bases -------------------------------------------------------------------------------

    def base(self, configured: str, substitute: str, build: Callable[[], None]) -> str:
        """``configured`` when present or pullable, else ``substitute`` (built as needed)."""
        if image_exists(configured):
            return configured
        reason = self._pull(configured)
        if reason is None:
            return configured
        self.say(
            f"images: base {configured} cannot be pulled ({reason}); "
            f"using {substitute}, built from Debian packages"
        )
        build()
        return substitute

    def _pull(self, name: str) -> str | None:
        try:
            done = subprocess.run(  # noqa: S603 - argv built here
                [_cli(), "pull", "--quiet", name],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return "no answer from the registry in 120 s"
        if done.returncode == 0:
            return None
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"

    def debootstrap(self) -> None:
        mirror = _debian_mirror()
        inputs = {"suite": _SUITE, "variant": "minbase", "mirror": mirror, "trim": str(_TRIM)}
        digest = _digest(self.root, [], inputs)
        if self._up_to_date(LOCAL_DEBIAN, digest):
            return
        started = time.monotonic()
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.cache))
        try:
            run_command(
                [_debootstrap(self.say), "--variant=minbase", _SUITE, str(rootfs), mirror],
                what=f"debootstrap of Debian {_SUITE} from {mirror}",
                timeout=900,
            )
            for trimmed in _TRIM:
                shutil.rmtree(rootfs / trimmed, ignore_errors=True)
                (rootfs / trimmed).mkdir(parents=True, exist_ok=True)
            self._import(rootfs, digest)
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        self._report(LOCAL_DEBIAN, f"built by debootstrap in {time.monotonic() - started:.1f} s")

    def _import(self, rootfs: Path, digest: str) -> None:
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {INPUTS_LABEL}={digest}",
            'CMD ["bash"]',
        ]
        argv = [_cli(), "import", *(a for c in changes for a in ("--change", c)), "-", LOCAL_DEBIAN]
        tar = subprocess.Popen(  # noqa: S603 - argv built here
            ["tar", "-C", str(rootfs), "-c", "."],  # noqa: S607
            stdout=subprocess.PIPE,
        )
        assert tar.stdout is not None
        imported = subprocess.run(  # noqa: S603 - argv built here
            argv, stdin=tar.stdout, capture_output=True, text=True, check=False, timeout=600
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise ProvisionError(f"docker import of {rootfs} failed: {imported.stderr.strip()}")

    # -- images from Dockerfiles -------------------------------------------------------------

    def build(self, recipe: _Recipe, before: Callable[[], None] | None = None) -> None:
        """Build ``recipe`` unless an image with the same inputs label exists."""
        files = [recipe.dockerfile, *_files(self.root, recipe.inputs)]
        ignore = Path(f"{recipe.dockerfile}.dockerignore")
        if (self.root / ignore).exists():
            files.append(str(ignore))
        extra = {**recipe.args}
        for key, value in recipe.args.items():
            if key.endswith("_IMAGE"):
                extra[f"{key}@id"] = _inspect(value, "{{.Id}}") or "missing"
        digest = _digest(self.root, dict.fromkeys(files), extra)
        if not self._up_to_date(recipe.name, digest):
            self._build(recipe, digest, before)
        for tag in recipe.also_tagged:
            subprocess.run(  # noqa: S603 - argv built here
                [_cli(), "tag", recipe.name, tag], capture_output=True, check=True, timeout=60
            )

    def _build(self, recipe: _Recipe, digest: str, before: Callable[[], None] | None) -> None:
        if before is not None:
            before()
        cli, env = _build_cli()
        log = self.cache / f"{recipe.name.replace('/', '_').replace(':', '_')}.build.log"
        argv = [cli, "build", "--progress=plain", "-f", recipe.dockerfile, "-t", recipe.name]
        argv += ["--label", f"{INPUTS_LABEL}={digest}"]
        for key, value in recipe.args.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        with log.open("w") as out:
            done = subprocess.run(  # noqa: S603 - argv built here
                [*argv, recipe.context],
                cwd=self.root,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=1800,
            )
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise ProvisionError(f"building {recipe.name} failed (full log {log}):\n{tail}")
        self._report(recipe.name, f"built in {time.monotonic() - started:.1f} s")

    def _up_to_date(self, name: str, digest: str) -> bool:
        if self.force:
            return False
        label = _inspect(name, f'{{{{ index .Config.Labels "{INPUTS_LABEL}" }}}}')
        if label != digest:
            return False
        self._report(name, f"up to date (inputs {digest[:12]})")
        return True

    def _report(self, name: str, what: str) -> None:
        self.say(f"images: {name} {what}, {_size(name) / 2**20:.0f} MiB")

    def wheelhouse(self) -> None:
        """Wheels of every distribution under libs/ and services/ and their dependencies."""
        target = self.root / _WHEELHOUSE
        dists = sorted(
            str(p.parent.relative_to(self.root))
            for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml")
            for p in self.root.glob(pattern)
        )
        partial = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=self.cache))
        # Built from a copy of the files git sees: setuptools builds in the source tree and
        # packages whatever an earlier build left in its build/ directory.
        sources = Path(tempfile.mkdtemp(prefix="sources-", dir=self.cache))
        constraints = sources / "constraints.txt"
        requirements = (self.root / "requirements-dev.txt").read_text()
        constraints.write_text(re.sub(r"\[[^]]*\]", "", requirements))
        try:
            for name in _files(self.root, dists):
                (sources / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.root / name, sources / name)
            seconds = run_command(
                [_host_python(), "-m", "pip", "wheel", "-q", "--wheel-dir", str(partial),
                 "--constraint", str(constraints), *(f"./{d}" for d in dists)],
                what="building the image's wheels on the host (pip wheel)",
                cwd=sources,
                timeout=1200,
            )  # fmt: skip
            if target.exists():
                shutil.rmtree(target)
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
            shutil.rmtree(sources, ignore_errors=True)
        count = len(list(target.glob("*.whl")))
        self.say(f"images: {count} wheels for {len(dists)} distributions built in {seconds:.1f} s")


def release_image(repo_root: Path) -> str:
    """``aion:<the aion distribution's version>``: the second tag of ``aion:dev``.

    deploy/k8s/kustomization.yaml deploys that name, so the manifests use the same image.
    """
    import tomllib  # noqa: PLC0415 - only the aion image's extra tag needs it

    project = tomllib.loads((repo_root / "libs/aion_client/pyproject.toml").read_text())
    return f"aion:{project['project']['version']}"


def _size(name: str) -> int:
    size = _inspect(name, "{{.Size}}")
    return int(size) if size and size.isdigit() else 0


def _host_python() -> str:
    import sys  # noqa: PLC0415 - only the wheelhouse needs it

    return sys.executable


def _debootstrap(say: Say) -> str:
    found = shutil.which("debootstrap")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ProvisionError(
            "building the Debian base needs debootstrap (and root): install it, or make the "
            "configured base image pullable"
        )
    say("images: installing debootstrap (apt-get)…")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run_command(["apt-get", "update"], what="apt-get update", env=env)
    run_command(["apt-get", "install", "-y", "debootstrap"], what="installing debootstrap", env=env)
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def _debian_mirror() -> str:
    """``$AION_DEBIAN_MIRROR``, else the mirror this machine's apt uses, else deb.debian.org."""
    if override := os.environ.get("AION_DEBIAN_MIRROR"):
        return override
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:  # noqa: PLR2004
                return parts[1]
    return "http://deb.debian.org/debian"


def build_images(
    repo_root: Path | None = None, *, say: Say = print, force: bool = False
) -> ImageSet:
    """Build (or find up to date) every image; see the module docstring."""
    root = repo_root or find_repo_root()
    if server_version() is None:
        raise ProvisionError("no Docker engine answers (start one, or run `make test`)")
    builder = _Builder(root, say, force=force)
    debian = builder.base(
        os.environ.get("AION_DEBIAN_IMAGE", "debian:bookworm-slim"),
        LOCAL_DEBIAN,
        builder.debootstrap,
    )

    def local_python() -> None:
        builder.build(
            _Recipe(
                name=LOCAL_PYTHON,
                dockerfile="deploy/base/python.Dockerfile",
                context="deploy/base",
                inputs=(),
                args={"DEBIAN_IMAGE": debian},
            )
        )

    python = builder.base(
        os.environ.get("AION_PYTHON_IMAGE", "python:3.11-slim"), LOCAL_PYTHON, local_python
    )
    builder.build(
        _Recipe(
            name=AION_IMAGE,
            dockerfile="deploy/Dockerfile",
            context=".",
            inputs=(
                "requirements-dev.txt",
                "libs",
                "services",
                "schemas",
                "examples",
                "deploy/wheelhouse",
            ),
            args={"PYTHON_IMAGE": python, "WHEELHOUSE": str(_WHEELHOUSE)},
            # The name and tag deploy/k8s/kustomization.yaml deploys: the same image.
            also_tagged=(release_image(root),),
        ),
        before=builder.wheelhouse,
    )
    libs, _ = ensure_jars(root)
    try:
        relative_libs = libs.resolve().relative_to(root)
    except ValueError as err:
        raise ProvisionError(
            f"the Kafka jars ({libs}) must be inside the repository to be sent to the build: "
            "unset AION_KAFKA_LIBS for `make images`"
        ) from err
    kafka = kafka_image(root)
    builder.build(
        _Recipe(
            name=kafka,
            dockerfile="deploy/kafka/Dockerfile",
            context=".",
            inputs=(
                "deploy/kafka/log4j2.properties",
                "deploy/kafka/entrypoint.sh",
                "deploy/kafka/kafka-ready",
                "deploy/kafka/pom.xml",
            ),
            args={"DEBIAN_IMAGE": debian, "KAFKA_LIBS": str(relative_libs)},
        )
    )
    builder.build(
        _Recipe(
            name=POSTGRES_IMAGE,
            dockerfile="deploy/postgres/Dockerfile",
            context="deploy/postgres",
            inputs=("deploy/postgres/entrypoint.sh",),
            args={"DEBIAN_IMAGE": debian},
        )
    )
    names = {"aion": AION_IMAGE, "kafka": kafka, "postgres": POSTGRES_IMAGE}
    return ImageSet(
        **names,
        bases={"debian": debian, "python": python},
        sizes={name: _size(name) for name in names.values()},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``build [--force] [--if-docker]``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.images")
    parser.add_argument("command", choices=["build"])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--if-docker",
        action="store_true",
        help="exit 0 with a note when no Docker engine answers (make test outside CI)",
    )
    args = parser.parse_args(argv)
    say: Say = lambda line: print(line, flush=True)  # noqa: E731, T201 - CLI progress
    if args.if_docker and server_version() is None:
        say("images: no Docker engine answers; nothing built (the container tests will skip)")
        return 0
    started = time.monotonic()
    try:
        built = build_images(say=say, force=args.force)
    except ProvisionError as err:
        say(f"error: {err}")
        return 1
    sizes = ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in built.sizes.items())
    say(f"images: ready in {time.monotonic() - started:.1f} s: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
