"""Publishing: the records workflow code writes to user topics with ``ctx.publish``.

A publish is a decision of the code: the engine appends a ``RecordPublished`` event and hands
the record to the service, which writes it in the same Kafka transaction as the event batch —
so a read_committed reader sees it exactly when the run's history holds it, and a replay,
which matches the decision against that event, never writes it again.

A topic the engine cannot write to (it does not exist, and creating topics is off) blocks the
run with the reason instead of failing it: create the topic and move the run
(``aion run move ID VERSION``) and the publish is made again. Which topics exist is the
service's knowledge (:class:`TopicCheck`); the core only asks.
"""

from __future__ import annotations

from typing import Protocol

from aion_common.domain import PublishHeader, RecordPublished
from aion_engine._executor import Publish
from aion_engine._state import RunState
from aion_engine._work import Work
from aion_engine.decision import PublishedRecord
from aion_engine.versions import Missing

__all__ = ["PUBLISH_ID_HEADER", "TopicCheck", "record"]

PUBLISH_ID_HEADER = "aion.publish.id"
"""The header carrying a published record's ``publish_id``: derived from the run and the
call, so a consumer of an at-least-once engine's output can drop a duplicate."""


class TopicCheck(Protocol):
    """Whether records may be written to a topic now: None if so, else why not."""

    def __call__(self, topic: str) -> str | None:
        """The reason ``topic`` cannot be written, or None."""


def record(
    work: Work, run: RunState, decision: Publish, check: TopicCheck | None
) -> Missing | None:
    """Append the publish's event and queue its record; the problem (the run must block on it)
    when its topic cannot be written."""
    problem = None if check is None else check(decision.topic)
    if problem is not None:
        return Missing(
            f"publish to topic {decision.topic!r} refused: {problem}; create the topic, then "
            "move the run to its version (aion run move ID VERSION) to publish again",
            "PublishTopicMissing",
        )
    work.append(
        RecordPublished(
            **work.envelope(run.run_id),
            publish_id=decision.publish_id,
            topic=decision.topic,
            key=decision.key,
            value=decision.value,
            value_format=decision.value_format,
            headers=tuple(PublishHeader(name=n, value=v) for n, v in decision.headers),
        )
    )
    headers = tuple((n, v.encode("utf-8")) for n, v in decision.headers)
    work.published.append(
        PublishedRecord(
            topic=decision.topic,
            key=None if decision.key is None else decision.key.encode("utf-8"),
            value=decision.encoded,
            headers=((PUBLISH_ID_HEADER, decision.publish_id.encode("ascii")), *headers),
        )
    )
    return None
