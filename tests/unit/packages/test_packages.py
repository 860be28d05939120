"""Packages: content hashes, archives, and two versions of one module tree loaded side by side."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from aion_common.packages import (
    Package,
    PackageError,
    PackageLoader,
    build_package,
    declared_workflows,
)


def _tree(root: Path, greeting: str) -> Path:
    package = root / "greetings"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from greetings.words import WORD\n")
    (package / "words.py").write_text(f"WORD = {greeting!r}\n")
    (package / "flows.py").write_text(
        "import greetings.words\n"
        "from . import words as same\n"
        "from greetings import WORD\n"
        "def hello(name):\n"
        "    return f'{greetings.words.WORD}, {name} ({same.WORD}/{WORD})'\n"
    )
    (package / "notes.txt").write_text("data")
    return package


def test_the_version_is_the_content_hash(tmp_path: Path) -> None:
    first = build_package(_tree(tmp_path / "a", "hello"))
    again = build_package(_tree(tmp_path / "b", "hello"))
    other = build_package(_tree(tmp_path / "c", "hi"))
    assert first.version == again.version
    assert first.version != other.version
    assert len(first.version) == 64
    assert first.top_level == ("greetings",)
    assert {p for p, _ in first.files} == {
        "greetings/__init__.py",
        "greetings/words.py",
        "greetings/flows.py",
    }
    with_data = build_package(tmp_path / "a" / "greetings", include=["greetings/*.txt"])
    assert "greetings/notes.txt" in dict(with_data.files)
    assert with_data.version != first.version


def test_an_archive_round_trips_and_is_checked(tmp_path: Path) -> None:
    package = build_package(_tree(tmp_path, "hello"))
    assert Package.from_archive(package.archive()).version == package.version
    with pytest.raises(PackageError, match="not a package archive"):
        Package.from_archive(b"not a zip")
    with pytest.raises(PackageError, match="exceeds"):
        Package.from_archive(package.archive(), limit=10)
    with pytest.raises(PackageError, match="plain relative path"):
        Package((("../escape.py", b""),))


def test_two_versions_load_side_by_side_and_never_mix(tmp_path: Path) -> None:
    v1 = build_package(_tree(tmp_path / "v1", "hello"))
    v2 = build_package(_tree(tmp_path / "v2", "good day"))
    loader = PackageLoader(tmp_path / "cache")
    one = {m.__name__.split(".", 1)[1]: m for m in loader.load(v1)}
    two = {m.__name__.split(".", 1)[1]: m for m in loader.load(v2)}
    assert one["greetings.flows"].hello("ada") == "hello, ada (hello/hello)"
    assert two["greetings.flows"].hello("ada") == "good day, ada (good day/good day)"
    assert "greetings" not in sys.modules, "no unversioned copy was imported"
    assert loader.loaded() == tuple(sorted((v1.version, v2.version)))
    assert loader.load(v1)[0] is one[next(iter(one))], "a version loads once"


def test_a_broken_package_says_where_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    (root / "bad.py").write_text("def oops(:\n")
    loader = PackageLoader(tmp_path / "cache")
    package = build_package(root / "bad.py")
    with pytest.raises(PackageError, match=r"bad.py:1: syntax error"):
        loader.load(package)
    (root / "fails.py").write_text("import no_such_module_anywhere\n")
    with pytest.raises(PackageError, match="importing fails failed: ModuleNotFoundError"):
        loader.load(build_package(root / "fails.py"))
    assert loader.loaded() == ()
    with pytest.raises(PackageError, match="holds no Python module"):
        build_package(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_declared_workflows_are_read_without_running_the_code(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "import aion\n"
        "from aion import workflow\n"
        "raise RuntimeError('never run')\n"
        "@workflow.defn\n"
        "async def plain(ctx, x): ...\n"
        "@workflow.defn('named')\n"
        "async def a(ctx, x): ...\n"
        "@aion.workflow.defn(name='keyword')\n"
        "async def b(ctx, x): ...\n"
        "@activity.defn\n"
        "async def not_a_workflow(x): ...\n"
    )
    found = declared_workflows(build_package(tmp_path / "flows.py"))
    assert found == {"plain": "flows.py:5", "named": "flows.py:7", "keyword": "flows.py:9"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def broken(:\n", "flows.py:1: syntax error"),
        (
            "from aion import workflow\nN='x'\n@workflow.defn(N)\nasync def f(c, i): ...\n",
            "flows.py:3: a workflow type's name must be a string literal",
        ),
        (
            "from aion import workflow\n@workflow.defn('x')\nasync def f(c, i): ...\n"
            "@workflow.defn('x')\nasync def g(c, i): ...\n",
            "'x' is defined twice",
        ),
    ],
)
def test_undeployable_sources_are_refused_with_file_and_line(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "flows.py").write_text(source)
    with pytest.raises(PackageError, match=re.escape(message)):
        declared_workflows(build_package(tmp_path / "flows.py"))
