"""How the watcher's facts are written to ``<prefix>.watcher-state`` and
``<prefix>.watcher-closed`` and read back.

Three kinds of records, each on the partition its fact came from (the partition of the event
that taught it):

- a **workflow** (key ``w`` + id): its current run, parent link, whether it is open, and its
  latest run ids (the last :data:`RUNS_KEPT`, oldest first, for telling a closed parent run
  from an unknown one) and the runs of its chain that continued-as-new and still hold a carried
  child (their children's watches go on);
  written when a run starts or closes, tombstoned when the workflow is purged. An open one is
  in ``watcher-state``, restored on acquisition; a closed one in ``watcher-closed`` (its
  ``watcher-state`` record tombstoned once the closed one is acknowledged), loaded into the
  partition's closed store in the background and read back when a parent's status is asked;
- a **watch** (key ``a`` + parent, run, child): the record to issue once the child's final
  terminal is known (the ``RecordChildTerminal``, codec-encoded) and its blind re-issues;
  tombstoned when the parent records the child or its run closes;
- a **recorded child** (key ``r`` + parent, run, child) of a parent run still open;
  tombstoned when that run closes.

So a restore reads open work only: open workflows, watches, recorded children of open runs.
:data:`FORMAT` is the layout's version, in the build marker: a changelog built in an older
layout (1: closed workflows' records in ``watcher-state``) is built again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from aion_common.codecs import Codec
from aion_common.domain import (
    AionError,
    ParentClosePolicy,
    ParentLink,
    RecordChildTerminal,
)

__all__ = [
    "FORMAT",
    "RECORDED",
    "RUNS_KEPT",
    "WATCH",
    "WORKFLOW",
    "ChangelogUnreadable",
    "WorkflowFacts",
    "decode_watch",
    "decode_workflow",
    "encode_watch",
    "encode_workflow",
    "pair_key",
    "split_pair_key",
    "workflow_key",
]

FORMAT: Final = 2
"""The changelog layout (the build marker's version): 2 keeps closed workflows' records in
``watcher-closed``."""
WORKFLOW: Final = b"w"
WATCH: Final = b"a"
RECORDED: Final = b"r"
RUNS_KEPT: Final = 64
_SEP: Final = b"\x00"


class ChangelogUnreadable(AionError):
    """A watcher changelog value that does not decode."""


@dataclass(frozen=True, slots=True)
class WorkflowFacts:
    """What a workflow record holds."""

    workflow_id: str
    last_seq: int
    run_id: str
    parent: ParentLink | None
    open: bool
    runs: tuple[str, ...]
    """The latest runs, oldest first (at most :data:`RUNS_KEPT` are written)."""
    continued: tuple[str, ...] = ()
    """Runs of the current chain that continued-as-new and still hold a carried child: their
    children's watches go on (the chain's newest run records their terminals); a run leaves
    once the chain carries none of its children, and all leave when the chain ends."""


def workflow_key(workflow_id: str) -> bytes:
    """A workflow record's key."""
    return WORKFLOW + workflow_id.encode()


def pair_key(kind: bytes, parent: str, run: str, child: str) -> bytes:
    """A watch's or recorded child's key."""
    return kind + _SEP.join((parent.encode(), run.encode(), child.encode()))


def split_pair_key(key: bytes) -> tuple[str, str, str]:
    """(parent, run, child) of a watch's or recorded child's key."""
    parent, run, child = key[1:].split(_SEP, 2)
    return parent.decode(), run.decode(), child.decode()


def encode_workflow(facts: WorkflowFacts) -> bytes:
    """A workflow record's value."""
    parent = facts.parent
    link = (
        None if parent is None else [parent.workflow_id, parent.run_id, parent.close_policy.value]
    )
    document = {
        "s": facts.last_seq,
        "r": facts.run_id,
        "p": link,
        "o": facts.open,
        "runs": list(facts.runs[-RUNS_KEPT:]),
    }
    if facts.continued:  # most workflows never continue-as-new: no key for them
        document["c"] = list(facts.continued)
    return json.dumps(document, separators=(",", ":")).encode()


def decode_workflow(workflow_id: str, value: bytes) -> WorkflowFacts:
    """A workflow record's facts; :class:`ChangelogUnreadable` if it holds none."""
    try:
        document = json.loads(value)
        link = document["p"]
        parent = (
            None
            if link is None
            else ParentLink(
                workflow_id=link[0], run_id=link[1], close_policy=ParentClosePolicy(link[2])
            )
        )
        return WorkflowFacts(
            workflow_id=workflow_id,
            last_seq=int(document["s"]),
            run_id=str(document["r"]),
            parent=parent,
            open=bool(document["o"]),
            runs=tuple(str(r) for r in document["runs"]),
            continued=tuple(str(r) for r in document.get("c", ())),
        )
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise ChangelogUnreadable(f"not a watcher workflow record: {err!r}") from err


def encode_watch(codec: Codec, command: RecordChildTerminal | None, blind_reissues: int) -> bytes:
    """A watch's value: its blind re-issues, then its record (if the child has ended)."""
    body = b"" if command is None else codec.encode_command(command, trusted=True)
    return bytes([min(blind_reissues, 255)]) + body


def decode_watch(codec: Codec, value: bytes) -> tuple[RecordChildTerminal | None, int]:
    """A watch's record (None until the child ended) and blind re-issues."""
    if not value:
        raise ChangelogUnreadable("an empty watch record")
    if len(value) == 1:
        return None, value[0]
    try:
        command = codec.decode_command(value[1:])
    except AionError as err:
        raise ChangelogUnreadable(f"undecodable watch record: {err}") from err
    if not isinstance(command, RecordChildTerminal):
        raise ChangelogUnreadable(f"a watch holds a {type(command).__name__}")
    return command, value[0]
