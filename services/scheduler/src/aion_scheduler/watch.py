"""Whether the runs a schedule started have ended: read where their records are.

A run's events (and the engine's refusal of its start, if any) are keyed by its workflow id,
so they sit in one partition of ``<prefix>.events`` (and of ``<prefix>.replies``). When the
scheduler starts a watched run it notes those partitions' end offsets *before* its start is
sent (:meth:`RunWatch.offsets_for`); :meth:`RunWatch.open_runs` later reads each partition from
there to its end (read_committed) and looks only at records with that key: a final terminal
(not a continue-as-new) or a refusal of the start's command id means the run is over. Only
schedules whose overlap policy needs it pay for this, and only while a run is open.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from aion_common.codecs import Codec
from aion_common.domain import (
    DecodeError,
    ScheduledRun,
    WorkflowContinuedAsNew,
    outcome_of,
)
from aion_common.kafka.consumer import read_partition_to_end, stop_consumer
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.options import client_options
from aion_common.kafka.topics import Topics, partition_for
from aion_common.settings import Settings

__all__ = ["RunWatch"]


class RunWatch:
    """Reads the events and replies partitions of watched runs."""

    def __init__(self, settings: Settings, codec: Codec) -> None:
        self._settings = settings
        self._codec = codec
        self._topics = Topics(settings.topic_prefix)

    async def offsets_for(self, workflow_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """For each id: the end offsets of its events and replies partitions now."""
        ids = list(workflow_ids)
        if not ids:
            return {}
        by_id = {w: partition_for(w, self._settings.partitions) for w in ids}
        tps = {
            TopicPartition(topic, p)
            for p in by_id.values()
            for topic in (self._topics.events, self._topics.replies)
        }
        consumer = AIOKafkaConsumer(
            **client_options(self._settings),
            group_id=None,
            client_id=f"aion-{self._settings.instance_id}-scheduler-offsets",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        try:
            await consumer.start()
            ends: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
        except KafkaError as err:
            raise infrastructure_error(err, "reading end offsets") from err
        finally:
            await stop_consumer(consumer)
        return {
            w: (
                ends[TopicPartition(self._topics.events, p)],
                ends[TopicPartition(self._topics.replies, p)],
            )
            for w, p in by_id.items()
        }

    async def open_runs(self, runs: Sequence[ScheduledRun]) -> tuple[set[str], list[ScheduledRun]]:
        """The workflow ids among ``runs`` that have not ended, and ``runs`` with offsets moved
        past what was read (so the next check reads only what is new)."""
        still_open: set[str] = set()
        updated: list[ScheduledRun] = []
        for run in runs:
            ended, events_end = await self._ended_in_events(run)
            refused, replies_end = (False, run.replies_offset)
            if not ended:
                refused, replies_end = await self._refused(run)
            if not (ended or refused):
                still_open.add(run.workflow_id)
            updated.append(replace(run, events_offset=events_end, replies_offset=replies_end))
        return still_open, updated

    async def _ended_in_events(self, run: ScheduledRun) -> tuple[bool, int]:
        key = run.workflow_id.encode("utf-8")
        partition = partition_for(run.workflow_id, self._settings.partitions)
        position = run.events_offset
        async for record in read_partition_to_end(
            self._settings, self._topics.events, partition, start=run.events_offset
        ):
            position = record.offset + 1
            if record.key != key:
                continue
            try:
                batch = self._codec.decode_batch(record.value, trusted=True)
            except DecodeError:
                continue  # quarantined by the projector; not the scheduler's to judge
            if any(
                outcome_of(event) is not None and not isinstance(event, WorkflowContinuedAsNew)
                for event in batch.events
            ):
                return True, position
        return False, position

    async def _refused(self, run: ScheduledRun) -> tuple[bool, int]:
        key = run.workflow_id.encode("utf-8")
        partition = partition_for(run.workflow_id, self._settings.partitions)
        position = run.replies_offset
        async for record in read_partition_to_end(
            self._settings, self._topics.replies, partition, start=run.replies_offset
        ):
            position = record.offset + 1
            if record.key != key:
                continue
            try:
                refusal = self._codec.decode_refusal(record.value)
            except DecodeError:
                continue
            if refusal.command_id == run.command_id:
                return True, position
        return False, position
