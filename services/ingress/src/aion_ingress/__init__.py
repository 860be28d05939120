"""``aion ingress``: records of the user's own Kafka topics become workflow commands.

A declarative configuration (:func:`load_config`) maps each topic's records to a start, a
signal or a signal-with-start; :class:`IngressService` consumes the topics as a group and
commits each batch's commands, dead letters and offsets in one Kafka transaction.
"""

from aion_ingress.config import IngressConfig, IngressConfigError, load_config, parse_config
from aion_ingress.mapping import Mapper, command_id
from aion_ingress.options import IngressOptions
from aion_ingress.service import IngressService

__all__ = [
    "IngressConfig",
    "IngressConfigError",
    "IngressOptions",
    "IngressService",
    "Mapper",
    "command_id",
    "load_config",
    "parse_config",
]
