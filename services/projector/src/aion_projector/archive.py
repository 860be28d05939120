"""Archival of purged workflows' histories (as Temporal's archival): Avro object container
files, in a directory or an S3-compatible bucket.

When a workflow's retention runs out the engine appends ``WorkflowPurged``; before the
projector deletes the workflow's rows it writes the history it holds — every event of every
run, then the purge itself — as one Avro object container file (fastavro, deflate), one file per
purged incarnation of the id (an id may be used again after a purge, and purged again):

    <root>/<workflow id, percent-encoded>/<purged at, epoch ms, 13 digits>-<purge seq>.avro

The name depends only on the purge event, so re-applying a purge after a crash writes the same
file again. ``AION_ARCHIVE`` chooses where: a path or ``file://`` URL, or ``s3://bucket/prefix``
(``AION_ARCHIVE_S3_ENDPOINT`` for an S3-compatible service; credentials and region from the
usual ``AWS_*`` variables); unset, histories are deleted without a copy. The API and
``aion history --archived`` read them back.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlparse

import fastavro

__all__ = [
    "ARCHIVE_SCHEMA",
    "Archive",
    "ArchivedHistory",
    "DirectoryArchive",
    "S3Archive",
    "archive_from_env",
    "read_history",
    "write_history",
]

ARCHIVE_SCHEMA: Any = fastavro.parse_schema(
    {
        "type": "record",
        "name": "ArchivedEvent",
        "namespace": "aion.archive.v1",
        "doc": "One event of a purged workflow's history, as the views held it.",
        "fields": [
            {"name": "workflow_id", "type": "string"},
            {"name": "seq", "type": "long"},
            {"name": "run_id", "type": "string"},
            {"name": "event_type", "type": "string"},
            {"name": "recorded_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "command_id", "type": "string"},
            {"name": "body", "type": "string", "doc": "the event's own fields, JSON"},
        ],
    }
)
_FIELDS = ("workflow_id", "seq", "run_id", "event_type", "recorded_at", "command_id", "body")


@dataclass(frozen=True, slots=True)
class ArchivedHistory:
    """One purged incarnation of a workflow id: where it is kept, when, and its events."""

    workflow_id: str
    location: str
    purged_at: datetime
    events: list[dict[str, Any]]


class Archive(Protocol):
    """Where purged histories go."""

    def put(self, workflow_id: str, name: str, data: bytes) -> str:
        """Store one file; returns where it went."""
        ...

    def list(self, workflow_id: str) -> list[str]:
        """The files kept for ``workflow_id``, by name."""
        ...

    def get(self, workflow_id: str, name: str) -> bytes:
        """One file's bytes."""
        ...

    def describe(self) -> str:
        """Where this archive is, for logs."""
        ...


def file_name(purged_at: datetime, seq: int) -> str:
    """The file of one purge (deterministic: the same purge names the same file)."""
    return f"{int(purged_at.timestamp() * 1000):013d}-{seq}.avro"


def _segment(workflow_id: str) -> str:
    # one path segment whatever the id holds ('/', '..'): decision 19's encoding
    return quote(workflow_id, safe="").replace(".", "%2E")


def encode_history(
    workflow_id: str, rows: Sequence[Mapping[str, Any]], purged_at: datetime
) -> bytes:
    """An Avro object container file holding ``rows`` (history rows, seq order)."""
    out = io.BytesIO()
    fastavro.writer(
        out,
        ARCHIVE_SCHEMA,
        ({name: row[name] for name in _FIELDS} for row in rows),
        codec="deflate",
        metadata={"aion.workflow_id": workflow_id, "aion.purged_at": purged_at.isoformat()},
    )
    return out.getvalue()


def write_history(
    archive: Archive,
    workflow_id: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    purged_at: datetime,
    purge_seq: int,
) -> str:
    """Archive one purged incarnation; returns where it went."""
    data = encode_history(workflow_id, rows, purged_at)
    return archive.put(workflow_id, file_name(purged_at, purge_seq), data)


def read_history(archive: Archive, workflow_id: str) -> list[ArchivedHistory]:
    """Every archived incarnation of ``workflow_id``, oldest purge first."""
    found = []
    for name in sorted(archive.list(workflow_id)):
        reader = fastavro.reader(io.BytesIO(archive.get(workflow_id, name)))
        metadata = reader.metadata
        purged = metadata.get("aion.purged_at")
        purged_at = (
            datetime.fromisoformat(purged)
            if purged
            else datetime.fromtimestamp(int(name.split("-", 1)[0]) / 1000, UTC)
        )
        found.append(
            ArchivedHistory(
                workflow_id=workflow_id,
                location=name,
                purged_at=purged_at,
                events=[dict(record) for record in reader],  # type: ignore[arg-type]
            )
        )
    return found


class DirectoryArchive:
    """Files under a local directory (or a mounted volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def put(self, workflow_id: str, name: str, data: bytes) -> str:
        directory = self.root / _segment(workflow_id)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        partial = path.with_name(f".{name}.partial")
        partial.write_bytes(data)
        partial.replace(path)  # a reader never sees half a file
        return str(path)

    def list(self, workflow_id: str) -> list[str]:
        directory = self.root / _segment(workflow_id)
        if not directory.is_dir():
            return []
        return sorted(p.name for p in directory.glob("*.avro"))

    def get(self, workflow_id: str, name: str) -> bytes:
        return (self.root / _segment(workflow_id) / name).read_bytes()


class S3Archive:
    """Objects in an S3 bucket (or an S3-compatible service at ``endpoint_url``)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        import boto3  # type: ignore[import-untyped]  # noqa: PLC0415 - only S3 archives need it

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, workflow_id: str, name: str = "") -> str:
        parts = [p for p in (self.prefix, _segment(workflow_id), name) if p]
        return "/".join(parts) + ("" if name else "/")

    def put(self, workflow_id: str, name: str, data: bytes) -> str:
        key = self._key(workflow_id, name)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def list(self, workflow_id: str) -> list[str]:
        prefix = self._key(workflow_id)
        names: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            names.extend(
                unquote(item["Key"][len(prefix) :])
                for item in page.get("Contents", ())
                if item["Key"].endswith(".avro")
            )
        return sorted(names)

    def get(self, workflow_id: str, name: str) -> bytes:
        answer = self._client.get_object(Bucket=self.bucket, Key=self._key(workflow_id, name))
        data: bytes = answer["Body"].read()
        return data


def archive_from_env(environ: Mapping[str, str] | None = None) -> Archive | None:
    """The archive ``AION_ARCHIVE`` names (None: no archive)."""
    source = os.environ if environ is None else environ
    raw = source.get("AION_ARCHIVE", "").strip()
    if not raw:
        return None
    parsed = urlparse(raw)
    if parsed.scheme == "s3":
        endpoint = source.get("AION_ARCHIVE_S3_ENDPOINT", "").strip() or None
        return S3Archive(parsed.netloc, parsed.path, endpoint_url=endpoint)
    if parsed.scheme in ("", "file"):
        return DirectoryArchive(Path(parsed.path if parsed.scheme else raw))
    raise ValueError(
        f"AION_ARCHIVE={raw!r}: expected a directory, file://PATH or s3://BUCKET/PREFIX"
    )
