"""Avro contracts and the codec: aion's Kafka values in Avro single-object encoding.

Schemas live in the repository's ``schemas/v<N>/`` (one ``<full name>.avsc`` per named type,
namespace ``aion.v1``; the full name is the stable type id). :class:`SchemaRegistry` indexes
every released schema by its CRC-64-AVRO fingerprint; :class:`Codec` writes with the current
schema and reads any released one, resolving it to the current schema.

Where ``schemas/`` is found: ``$AION_SCHEMAS_DIR`` if set; else ``aion_common/codecs/schemas``
if a build shipped a copy there as package data; else the nearest ``schemas/`` above this
package (the editable install inside the repository that development, tests and ``make dev``
use). A non-editable wheel must therefore either ship that copy or be run with
``$AION_SCHEMAS_DIR`` pointing at the repository's ``schemas/``.
"""

from aion_common.codecs._codec import MARKER, Codec, decode_key, encode_key
from aion_common.codecs._registry import (
    SCHEMAS_DIR_ENV,
    SchemaInfo,
    SchemaRegistry,
    locate_schemas_dir,
)
from aion_common.domain.payload import DEFAULT_PAYLOAD_LIMIT

__all__ = [
    "DEFAULT_PAYLOAD_LIMIT",
    "MARKER",
    "SCHEMAS_DIR_ENV",
    "Codec",
    "SchemaInfo",
    "SchemaRegistry",
    "decode_key",
    "encode_key",
    "locate_schemas_dir",
]
