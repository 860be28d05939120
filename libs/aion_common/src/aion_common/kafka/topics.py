"""The one module that names aion's topics, and the partition a workflow id lands on.

Every aion topic is keyed by the UTF-8 workflow id and has the same partition count, so a
workflow's commands, events, replies and dead letters share one partition number
(co-partitioning, as in Kafka Streams). :func:`partition_for` is Kafka's default partitioner
(``toPositive(murmur2(key)) % partitions``), so any service — or the Java client — computes
the same partition for a workflow without asking a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

__all__ = ["RUN_ENDED_HEADER", "Topics", "partition_for"]

RUN_ENDED_HEADER = "aion.run-ended"
"""The header the engine puts on an events record whose batch ends a run (a terminal event,
continue-as-new included) or blocks it; its value is the run id. Readers that wait for
outcomes (the API's result long-poll) look at it instead of decoding every batch."""


@dataclass(frozen=True, slots=True)
class Topics:
    """aion's topic names under one prefix (``AION_TOPIC_PREFIX``, ``aion`` by default)."""

    prefix: str

    @property
    def commands(self) -> str:
        """Commands to the engine (``StartWorkflow``, ``RecordChildTerminal``, …)."""
        return f"{self.prefix}.commands"

    @property
    def events(self) -> str:
        """Event batches: every workflow's history, the source of truth. Engine writes only."""
        return f"{self.prefix}.events"

    @property
    def replies(self) -> str:
        """The engine's answers to commands it refused (``CommandRefused``)."""
        return f"{self.prefix}.replies"

    @property
    def dead_letter(self) -> str:
        """Records a consumer could not process, with why (see ``kafka.dead_letter``)."""
        return f"{self.prefix}.dead-letter"

    @property
    def packages(self) -> str:
        """Workflow packages (compacted; key ``<type>@<version>``), written by ``aion deploy``."""
        return f"{self.prefix}.packages"

    @property
    def routes(self) -> str:
        """Routes: workflow type -> the version new runs start on (compacted)."""
        return f"{self.prefix}.routes"

    @property
    def engine_state(self) -> str:
        """The engine's changelog (compacted): every workflow's engine state, written in the
        same transaction as the event batch it came from. Engine reads and writes only."""
        return f"{self.prefix}.engine-state"

    @property
    def engine_closed(self) -> str:
        """The engine's changelog of closed workflows (compacted): the head a closed workflow
        keeps until retention purges it, moved here from ``engine-state`` when it closes (in
        the same transaction), so restoring open work never reads it. Engine reads and writes
        only."""
        return f"{self.prefix}.engine-closed"

    @property
    def watcher_state(self) -> str:
        """The watcher's changelog (compacted): open watches and the facts its fold keeps.
        Watcher reads and writes only."""
        return f"{self.prefix}.watcher-state"

    @property
    def watcher_closed(self) -> str:
        """The watcher's changelog of closed workflows (compacted): a closed workflow's record,
        moved here from ``watcher-state`` when it closes, so restoring open watches never reads
        it. Watcher reads and writes only."""
        return f"{self.prefix}.watcher-closed"

    @property
    def schedules(self) -> str:
        """Schedule definitions and trigger requests (compacted; key: schedule id), written by
        the API, read by the scheduler."""
        return f"{self.prefix}.schedules"

    @property
    def schedule_state(self) -> str:
        """What the scheduler did with each schedule (compacted; key: schedule id)."""
        return f"{self.prefix}.schedule-state"

    def tasks(self, queue: str) -> str:
        """Activity tasks (and cancel notices) of task queue ``queue``: engine writes, the
        ``aion worker`` group of that queue reads. Created on first use."""
        return f"{self.prefix}.tasks.{queue}"

    def all(self) -> tuple[str, ...]:
        """Every aion topic a service needs at start, in a fixed order (task queues' topics
        are created when first used)."""
        return (
            self.commands,
            self.events,
            self.replies,
            self.dead_letter,
            self.engine_state,
            self.engine_closed,
            self.watcher_state,
            self.watcher_closed,
        )


def partition_for(workflow_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``workflow_id`` among ``partitions``."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    # The key bytes are the UTF-8 workflow id, exactly what ``codecs.encode_key`` produces.
    digest: int = murmur2(workflow_id.encode("utf-8"))
    return (digest & 0x7FFFFFFF) % partitions
