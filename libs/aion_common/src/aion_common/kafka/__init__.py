"""aion's Kafka helpers: topic names and partitions, admin, probe, producer, consumer, DLQ.

Imports ``codecs`` and ``domain`` only; services build their processors on top of these.
"""

from aion_common.kafka import _transport
from aion_common.kafka.admin import TopicMismatch, ensure_topics, topic_configs
from aion_common.kafka.consumer import (
    IsolationLevel,
    ManualCommitConsumer,
    Record,
    read_partition_to_end,
)
from aion_common.kafka.dead_letter import (
    DeadLetter,
    DeadLetterPublisher,
    parse_dead_letter,
    read_dead_letters,
)
from aion_common.kafka.errors import infrastructure_error
from aion_common.kafka.link import RETRYING, Backoff, BrokerLink, is_retriable
from aion_common.kafka.options import client_options, max_record_bytes
from aion_common.kafka.probe import BrokerCapabilities, probe_capabilities
from aion_common.kafka.producer import Headers, KeyedProducer
from aion_common.kafka.topics import Topics, partition_for

_transport.install()  # before any connection is made: see its module

__all__ = [
    "RETRYING",
    "Backoff",
    "BrokerCapabilities",
    "BrokerLink",
    "DeadLetter",
    "DeadLetterPublisher",
    "Headers",
    "IsolationLevel",
    "KeyedProducer",
    "ManualCommitConsumer",
    "Record",
    "TopicMismatch",
    "Topics",
    "client_options",
    "ensure_topics",
    "infrastructure_error",
    "is_retriable",
    "max_record_bytes",
    "parse_dead_letter",
    "partition_for",
    "probe_capabilities",
    "read_dead_letters",
    "read_partition_to_end",
    "topic_configs",
]
