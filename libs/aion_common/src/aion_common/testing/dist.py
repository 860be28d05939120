"""``make dist``: every aion distribution as a wheel in ``dist/`` (aion is not on PyPI yet).

    python -m aion_common.testing.dist [--out DIR]

Builds ``aion-common`` (with the Avro schemas inside), ``aion`` (client, SDK, CLI, test kit),
``aion-dev``, and the services ``aion-engine``, ``aion-watcher``, ``aion-projector`` and
``aion-worker`` — without their dependencies, which come from PyPI — from a copy of the files
git sees (setuptools builds in the source tree and would package whatever an earlier build
left in ``build/``). Install them
together, by path, so pip takes every ``aion-*`` name from these files and never looks one
up on PyPI: ``pip install dist/*.whl`` (``docs/install.md``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from aion_common.testing._support import run_command
from aion_common.testing.images import _files

__all__ = ["build_wheels", "distributions", "main"]

_PACKAGED_SCHEMAS = "libs/aion_common/src/aion_common/codecs/schemas"


def distributions(root: Path) -> list[str]:
    """The distributions' directories, relative to the checkout (``libs/aion_client``, …)."""
    return sorted(
        str(p.parent.relative_to(root))
        for pattern in ("libs/*/pyproject.toml", "services/*/pyproject.toml")
        for p in root.glob(pattern)
    )


def build_wheels(root: Path, out: Path) -> list[Path]:
    """Build one wheel per distribution into ``out`` (its old aion wheels replaced)."""
    dists = distributions(root)
    out.mkdir(parents=True, exist_ok=True)
    sources = Path(tempfile.mkdtemp(prefix="aion-dist-"))
    partial = Path(tempfile.mkdtemp(prefix="aion-wheels-"))
    try:
        for name in _files(root, dists):
            (sources / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, sources / name)
        # the codec's packaged copy of the Avro schemas (aion_common.codecs.locate_schemas_dir)
        shutil.copytree(root / "schemas", sources / _PACKAGED_SCHEMAS)
        run_command(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
             str(partial), *(f"./{d}" for d in dists)],
            what="building the aion wheels (pip wheel)",
            cwd=sources,
            timeout=900,
        )  # fmt: skip
        built = sorted(partial.glob("*.whl"))
        for old in out.glob("aion*.whl"):
            old.unlink()
        for wheel in built:
            shutil.move(wheel, out / wheel.name)
        return sorted(out / wheel.name for wheel in built)
    finally:
        shutil.rmtree(sources, ignore_errors=True)
        shutil.rmtree(partial, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Build the wheels; print where they are."""
    parser = argparse.ArgumentParser(prog="python -m aion_common.testing.dist", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("dist"), help="default: dist/")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[5]  # libs/aion_common/src/aion_common/testing/
    wheels = build_wheels(root, args.out.resolve())
    for wheel in wheels:
        print(f"dist: {wheel}")  # noqa: T201 - the command's output
    print(f"dist: {len(wheels)} wheels; install them with: pip install {args.out}/*.whl")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
