"""What a user gets wrong, answered clearly: a missing image, an unpullable base, no Docker."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aion.testing.containers import AionContainersError, AionStack
from aion_common.testing._support import find_repo_root
from aion_common.testing.images import _Builder


def test_a_missing_image_is_named_with_make_images(docker_version: str) -> None:
    stack = AionStack(image="aion-no-such-image:1")
    with pytest.raises(AionContainersError) as refused:
        stack.start()
    message = str(refused.value)
    assert "'aion-no-such-image:1'" in message
    assert "make images" in message
    assert not stack.services, "nothing was started"


def test_an_unpullable_base_is_replaced_by_a_local_one_with_one_line(
    docker_version: str,
) -> None:
    lines: list[str] = []
    built: list[str] = []
    builder = _Builder(find_repo_root(), lines.append)
    chosen = builder.base(
        "aion-no-such-registry.invalid/base:1", "aion-local/substitute:1", lambda: built.append("x")
    )
    assert chosen == "aion-local/substitute:1"
    assert built == ["x"], "the substitute was built"
    assert len(lines) == 1, lines
    assert lines[0].startswith("images: base aion-no-such-registry.invalid/base:1 cannot be pulled")
    assert "using aion-local/substitute:1, built from Debian packages" in lines[0]


def test_without_docker_the_container_tests_skip_with_the_reason(tmp_path: Path) -> None:
    """A pytest run with no Docker engine reachable (DOCKER_HOST at nothing), CI unset."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_needs_docker.py").write_text(
        textwrap.dedent(
            """
            def test_needs_docker(docker_version):
                pass
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "1 skipped" in output, output
    assert "no Docker engine answers" in output, output
