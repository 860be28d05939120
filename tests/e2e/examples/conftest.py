"""The examples' end-to-end tests run on the ``aion.testing`` plugin's stack (its entry point
``aion-testing`` is active wherever the ``aion`` distribution is installed).

The plugin's configuration is narrowed here: the session broker of the project's own plugin
(``AION_TEST_KAFKA`` or the one it starts) instead of a second embedded one, and the
``examples`` package loaded into the engine.
"""

from __future__ import annotations

import dataclasses

import pytest

from aion.testing import with_workflows
from aion_dev import StackConfig


@pytest.fixture(scope="session")
def aion_stack_config(aion_stack_config: StackConfig, kafka_bootstrap: str) -> StackConfig:
    """The plugin's config on the session broker, with every example loaded."""
    return with_workflows(
        dataclasses.replace(aion_stack_config, kafka_bootstrap=kafka_bootstrap), "examples"
    )
