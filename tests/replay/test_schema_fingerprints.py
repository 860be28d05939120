"""Released schemas are frozen: the registry must match the pinned ``schemas/fingerprints.txt``.

Editing a released ``schemas/v<N>/*.avsc`` changes its fingerprint and fails here; the fix is a
new release directory, never an edit (see ``schemas/README.md``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aion_common.codecs import SchemaInfo, SchemaRegistry, locate_schemas_dir

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def pinned() -> set[tuple[str, str, str]]:
    lines = (SCHEMAS / "fingerprints.txt").read_text(encoding="utf-8").splitlines()
    rows = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(row) == 3 for row in rows), rows
    return {(r[0], r[1], r[2]) for r in rows}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(SCHEMAS)


def test_the_codec_finds_this_repositorys_schemas() -> None:
    assert locate_schemas_dir().resolve() == SCHEMAS


def test_registry_matches_the_pinned_fingerprints(registry: SchemaRegistry) -> None:
    actual = {(i.version, i.full_name, i.fingerprint.hex()) for i in registry.released()}
    assert actual == pinned()


def test_every_pinned_release_directory_is_present() -> None:
    releases = {version for version, _, _ in pinned()}
    for version in releases:
        assert (SCHEMAS / version).is_dir(), version
    assert {p.name for p in SCHEMAS.iterdir() if p.is_dir()} == releases


def test_fingerprints_are_unique(registry: SchemaRegistry) -> None:
    by_fp: dict[bytes, set[str]] = {}
    for info in registry.released():
        by_fp.setdefault(info.fingerprint, set()).add(info.canonical_form)
    assert all(len(forms) == 1 for forms in by_fp.values())
    names = [(i.version, i.full_name) for i in registry.released()]
    assert len(names) == len(set(names))


def _rabin(data: bytes) -> bytes:
    """CRC-64-AVRO as the Avro specification writes it, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_fingerprints_follow_the_avro_specification(registry: SchemaRegistry) -> None:
    for info in registry.released():
        assert _rabin(info.canonical_form.encode()) == info.fingerprint
        _assert_each_named_type_defined_once(info)


def _assert_each_named_type_defined_once(info: SchemaInfo) -> None:
    # the canonical form is self-contained: every referenced name was defined before its use
    form = info.canonical_form
    for name in {part.split('"')[0] for part in form.split('"name":"aion.v1.')[1:]}:
        assert form.count(f'"name":"aion.v1.{name}"') == 1, (info.full_name, name)


def test_current_schema_is_the_newest_release(registry: SchemaRegistry) -> None:
    newest = max({i.version for i in registry.released()}, key=lambda v: int(v[1:]))
    assert registry.current("aion.v1.EventBatch").version == newest
