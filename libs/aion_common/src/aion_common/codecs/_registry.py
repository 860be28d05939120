"""The schema registry: every released Avro schema in ``schemas/``, keyed by fingerprint."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fastavro.schema import parse_schema, to_parsing_canonical_form

from aion_common.domain.errors import CodecError

__all__ = ["SCHEMAS_DIR_ENV", "SchemaInfo", "SchemaRegistry", "locate_schemas_dir"]

SCHEMAS_DIR_ENV = "AION_SCHEMAS_DIR"
_VERSION_DIR = re.compile(r"^v(\d+)$")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One released record schema: its full name, release, fingerprint and parsed form."""

    full_name: str
    version: str
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, 8 bytes little-endian, as on the wire."""
    canonical_form: str
    parsed: dict[str, Any] = field(repr=False, compare=False)
    """fastavro's parsed, self-contained schema (every named type inlined once)."""

    @property
    def header(self) -> bytes:
        """The single-object encoding header: marker ``C3 01`` and the fingerprint."""
        return b"\xc3\x01" + self.fingerprint


def locate_schemas_dir() -> Path:
    """Find ``schemas/``: ``$AION_SCHEMAS_DIR``, a packaged copy, or the repository's.

    Order: the environment variable; ``aion_common/codecs/schemas`` if a build shipped one as
    package data; then the nearest ancestor of this file holding ``schemas/v<N>/`` (an
    editable install inside the repository).
    """
    configured = os.environ.get(SCHEMAS_DIR_ENV)
    if configured:
        path = Path(configured)
        if not _is_schemas_dir(path):
            raise CodecError(f"${SCHEMAS_DIR_ENV}={configured} holds no schemas/v<N>/ release")
        return path
    here = Path(__file__).resolve()
    packaged = here.parent / "schemas"
    if _is_schemas_dir(packaged):
        return packaged
    for ancestor in here.parents:
        candidate = ancestor / "schemas"
        if _is_schemas_dir(candidate):
            return candidate
    raise CodecError(
        f"no schemas/ directory found above {here}; set ${SCHEMAS_DIR_ENV} to aion's schemas/"
    )


def _is_schemas_dir(path: Path) -> bool:
    return path.is_dir() and any(_VERSION_DIR.match(p.name) for p in path.iterdir() if p.is_dir())


class SchemaRegistry:
    """Every record schema of every release under ``schemas/v<N>/``, by fingerprint and name.

    A release directory is complete and self-contained: one ``<full name>.avsc`` per named
    type, referring to other named types by full name. The highest release holds the current
    (reader) schema of each full name; older releases stay so old records remain readable.
    """

    def __init__(self, releases: Iterable[SchemaInfo]) -> None:
        """Index ``releases`` (oldest first); prefer :meth:`load`."""
        self._released = tuple(releases)
        by_fp: dict[bytes, SchemaInfo] = {}
        current: dict[str, SchemaInfo] = {}
        for info in self._released:
            known = by_fp.setdefault(info.fingerprint, info)
            if known.canonical_form != info.canonical_form:
                raise CodecError(
                    f"fingerprint collision: {known.full_name} ({known.version}) and "
                    f"{info.full_name} ({info.version}) share {info.fingerprint.hex()}"
                )
            current[info.full_name] = info
        self._by_fp = MappingProxyType(by_fp)
        self._current = MappingProxyType(current)

    @classmethod
    def load(cls, root: Path | None = None) -> SchemaRegistry:
        """Parse every release under ``root`` (default: :func:`locate_schemas_dir`).

        The default directory's registry is parsed once per process and shared (it is
        immutable): every :class:`~aion_common.codecs.Codec` built without one uses it.
        """
        if root is None:
            return _load_located(locate_schemas_dir())
        versions = sorted(
            (int(m.group(1)), p.name)
            for p in root.iterdir()
            if p.is_dir() and (m := _VERSION_DIR.match(p.name))
        )
        if not versions:
            raise CodecError(f"{root} holds no schemas/v<N>/ release")
        infos: list[SchemaInfo] = []
        for _, version in versions:
            infos.extend(_load_release(root / version, version))
        return cls(infos)

    def by_fingerprint(self, fp: bytes) -> SchemaInfo | None:
        """The schema with wire fingerprint ``fp`` (8 bytes), or None if never released."""
        return self._by_fp.get(fp)

    def fingerprints(self) -> Mapping[bytes, SchemaInfo]:
        """Every known fingerprint and the (oldest) release that introduced it."""
        return self._by_fp

    def released(self) -> tuple[SchemaInfo, ...]:
        """Every (release, full name) schema, oldest release first."""
        return self._released

    def current(self, full_name: str) -> SchemaInfo:
        """The newest release's schema of ``full_name``: the reader schema."""
        info = self._current.get(full_name)
        if info is None:
            raise CodecError(f"no released schema is named {full_name}")
        return info

    def full_names(self) -> frozenset[str]:
        """Every record full name of the newest release (and any older one)."""
        return frozenset(self._current)


@functools.cache
def _load_located(root: Path) -> SchemaRegistry:
    return SchemaRegistry.load(root)


def _crc64_avro_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_AVRO_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_AVRO_EMPTY = 0xC15D213AA4D7A795
_CRC64_AVRO_TABLE = _crc64_avro_table()


def crc64_avro(data: bytes) -> bytes:
    """The Avro spec's 64-bit Rabin fingerprint of ``data``, little-endian as on the wire.

    fastavro's ``fingerprint(..., "CRC-64-AVRO")`` gives the same bytes but rebuilds its
    256-entry table on every call: that was 60% of a registry's load, paid by every process.
    """
    result = _CRC64_AVRO_EMPTY
    table = _CRC64_AVRO_TABLE
    for byte in data:
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result.to_bytes(8, "little")


def _load_release(directory: Path, version: str) -> list[SchemaInfo]:
    definitions: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.avsc")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise CodecError(f"{path}: not JSON: {err}") from err
        full_name = _full_name(raw)
        if path.stem != full_name:
            raise CodecError(f"{path}: defines {full_name}; the file must be {full_name}.avsc")
        definitions[full_name] = raw
    infos = []
    for full_name, raw in definitions.items():
        if raw.get("type") not in ("record", "error"):
            continue
        inlined = _inline(full_name, definitions, set())
        try:
            parsed = parse_schema(inlined)
            canonical = to_parsing_canonical_form(parsed)
        except (ValueError, TypeError, KeyError) as err:
            raise CodecError(f"{directory / full_name}.avsc: invalid schema: {err}") from err
        assert isinstance(parsed, dict)  # a record schema parses to a dict
        fp = crc64_avro(canonical.encode("utf-8"))
        infos.append(SchemaInfo(full_name, version, fp, canonical, parsed))
    return infos


def _full_name(raw: dict[str, Any]) -> str:
    name = str(raw.get("name", ""))
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _inline(ref: str, definitions: Mapping[str, dict[str, Any]], seen: set[str]) -> Any:
    """A self-contained copy of ``ref``: each named type defined at its first use, then named.

    fastavro's own ``expand_schema`` leaves nested references unexpanded, which would give a
    parsing canonical form (and fingerprint) other Avro implementations disagree with.
    """
    if ref in seen:
        return ref
    raw = definitions.get(ref)
    if raw is None:
        raise CodecError(f"unknown named type {ref!r}; refer to other types by full name")
    seen.add(ref)
    node = {k: v for k, v in raw.items() if k != "namespace"}
    node["name"] = ref
    if raw["type"] in ("record", "error"):
        node["fields"] = [
            {**f, "type": _inline_type(f["type"], definitions, seen)} for f in raw["fields"]
        ]
    return node


def _inline_type(node: Any, definitions: Mapping[str, dict[str, Any]], seen: set[str]) -> Any:
    if isinstance(node, str):
        return node if node in _PRIMITIVES else _inline(node, definitions, seen)
    if isinstance(node, list):
        return [_inline_type(branch, definitions, seen) for branch in node]
    kind = node.get("type")
    if kind in _NAMED:
        raise CodecError(f"define {node.get('name')} in its own file and refer to it by name")
    if kind == "array":
        return {**node, "items": _inline_type(node["items"], definitions, seen)}
    if kind == "map":
        return {**node, "values": _inline_type(node["values"], definitions, seen)}
    return node
