"""Package and route records: the compacted topics every engine reads to run many versions.

``<prefix>.packages`` holds one :class:`PackageRecord` per (workflow type, version) — key
``<type>@<version>`` — carrying the package's archive; a tombstone deletes it.
``<prefix>.routes`` holds one :class:`RouteRecord` per workflow type — key the type — naming the
version new runs of that type start on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from aion_common.domain.errors import InvalidInput

__all__ = ["PackageRecord", "RouteRecord", "package_key", "validate_version"]

_VERSION = re.compile(r"^[0-9a-f]{64}$")


def validate_version(value: object) -> str:
    """Return ``value`` if it is a package version (64 lowercase hex digits)."""
    if not isinstance(value, str) or not _VERSION.match(value):
        raise InvalidInput(f"package version {value!r} is not 64 lowercase hex digits (sha-256)")
    return value


def package_key(workflow_type: str, version: str) -> str:
    """The packages topic's key for one type of one version."""
    return f"{workflow_type}@{version}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageRecord:
    """One workflow type of one package version: the whole package's archive (a zip), every
    type the package defines, and its top-level modules."""

    workflow_type: str
    version: str
    workflow_types: tuple[str, ...]
    top_level: tuple[str, ...]
    archive: bytes
    uploaded_at: datetime

    def __post_init__(self) -> None:
        validate_version(self.version)
        if self.workflow_type not in self.workflow_types:
            raise InvalidInput(f"package record of {self.workflow_type!r} does not define it")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRecord:
    """New runs of ``workflow_type`` start on ``version``."""

    workflow_type: str
    version: str
    routed_at: datetime

    def __post_init__(self) -> None:
        validate_version(self.version)
