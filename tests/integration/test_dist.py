"""``make dist``: one wheel per distribution, each installable on its own terms.

The ``aion-common`` wheel carries the Avro schemas (without them an installed aion cannot
decode a record), ``aion-dev`` requires every service it runs (the worker too), and each wheel
holds only what git sees.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from aion_common.testing.dist import build_wheels, distributions

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_make_dist_builds_every_distribution_as_a_wheel(tmp_path: Path) -> None:
    (tmp_path / "aion-stale-0.0.1-py3-none-any.whl").write_text("an older build")

    wheels = build_wheels(ROOT, tmp_path)

    names = sorted(w.name.split("-")[0] for w in wheels)
    assert len(names) == len(distributions(ROOT)) == 9
    assert names == [
        "aion",
        "aion_common",
        "aion_dev",
        "aion_engine",
        "aion_ingress",
        "aion_projector",
        "aion_scheduler",
        "aion_watcher",
        "aion_worker",
    ]
    assert not (tmp_path / "aion-stale-0.0.1-py3-none-any.whl").exists()
    common = next(w for w in wheels if w.name.startswith("aion_common-"))
    with zipfile.ZipFile(common) as archive:
        files = set(archive.namelist())
    assert "aion_common/codecs/schemas/v3/aion.v1.StartWorkflow.avsc" in files
    assert "aion_common/codecs/schemas/fingerprints.txt" in files
    dev = next(w for w in wheels if w.name.startswith("aion_dev-"))
    with zipfile.ZipFile(dev) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith("METADATA"))
        requires = archive.read(metadata).decode()
    services = ("engine", "watcher", "projector", "worker", "ingress", "scheduler")
    for service in (f"aion-{name}" for name in services):
        assert f"Requires-Dist: {service}" in requires
