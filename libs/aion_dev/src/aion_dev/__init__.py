"""``aion dev``: the whole aion stack in one supervised command, and its programmatic API.

:class:`Stack` (an async context manager) runs the embedded Kafka (or uses a given broker),
SQLite (or a given database), the engines, the watcher, the projector and the API as
supervised child processes under one home directory; :mod:`aion_dev.demo` runs the example
cases against it. ``python -m aion_dev --help`` for the command line.
"""

from aion_dev.stack import Stack, StackConfig, StackError, StartupError
from aion_dev.supervisor import SupervisedProcess

__all__ = ["Stack", "StackConfig", "StackError", "StartupError", "SupervisedProcess"]
