"""What every aion service runs on: a signal-aware lifecycle and structured logging."""

from aion_common.runtime.lifecycle import (
    EXIT_OK,
    EXIT_STOP_TIMEOUT,
    Service,
    run_until_signalled,
)
from aion_common.runtime.logging import (
    BoundLogger,
    JsonFormatter,
    bind,
    configure_logging,
    log_context,
)

__all__ = [
    "EXIT_OK",
    "EXIT_STOP_TIMEOUT",
    "BoundLogger",
    "JsonFormatter",
    "Service",
    "bind",
    "configure_logging",
    "log_context",
    "run_until_signalled",
]
