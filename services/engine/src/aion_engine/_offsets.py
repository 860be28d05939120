"""The engine reads committed offsets with :mod:`aion_common.kafka.offsets` (shared with the
ingress, which has the same need)."""

from aion_common.kafka.offsets import CommittedOffsets, OffsetFetchRetry, committed_from_response

__all__ = ["CommittedOffsets", "OffsetFetchRetry", "committed_from_response"]
