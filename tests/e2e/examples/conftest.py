"""The examples' end-to-end tests run on the ``aion.testing`` plugin's stack (its entry point
``aion-testing`` is active wherever the ``aion`` distribution is installed).

The plugin's configuration is narrowed here: the session broker of the project's own plugin
(``AION_TEST_KAFKA`` or the one it starts) instead of a second embedded one, and the
``examples`` package loaded into the engine.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from aion.testing import with_workflows
from aion_dev import StackConfig


@pytest.fixture(scope="session")
def aion_stack_config(
    aion_stack_config: StackConfig, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> StackConfig:
    """The plugin's config on the session broker, with every example loaded and the example
    integration's ingress (its topics under the stack's prefix, so runs never meet)."""
    prefix = aion_stack_config.topic_prefix
    mapping = json.loads(json.dumps(_example_mapping()))
    mapping["routes"][0]["topic"] = f"{prefix}-orders"
    path = tmp_path_factory.mktemp("ingress") / "ingress.json"
    path.write_text(json.dumps(mapping))
    config = dataclasses.replace(
        aion_stack_config,
        kafka_bootstrap=kafka_bootstrap,
        ingress=(path,),
        env={**aion_stack_config.env, "AION_PUBLISH_CREATE_TOPICS": "on"},
    )
    return with_workflows(config, "examples")


def _example_mapping() -> dict[str, object]:
    import yaml

    root = Path(__file__).resolve().parents[3]
    loaded: dict[str, object] = yaml.safe_load(
        (root / "examples" / "integration" / "ingress.yaml").read_text()
    )
    return loaded
