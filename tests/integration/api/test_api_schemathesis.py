"""schemathesis against ``/openapi.json``, in-process (ASGI): no 5xx, no schema violation.

Every operation gets generated valid and invalid requests; schemathesis's default checks
(server errors, status codes, content types, response schemas and headers, positive data
accepted and negative data rejected) run on every answer. The views hold the shared data
set; commands go to an in-memory sink (the Kafka sink is covered in test_api_commands).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from sqlalchemy.pool import NullPool

from aion_common.domain import PackageRecord
from aion_common.packages import Package
from aion_common.settings import Settings
from aion_projector import connect, migrate, session_factory
from aion_projector.api import create_app
from aion_projector.api._catalog import MemoryCatalog
from aion_projector.api._schedules import MemorySchedules

from .conftest import MemorySink
from .dataset import populate
from .desk import MemoryDesk, answered

# A package upload is a zip: send what hypothesis generates for a binary body as it is.
schemathesis.serializer.alias("application/zip", "application/octet-stream")

_SOURCE = b"from aion import workflow\n@workflow.defn('order')\nasync def o(c, i): ...\n"


def _record(workflow_type: str) -> PackageRecord:
    package = Package((("flows.py", _SOURCE),))
    return PackageRecord(
        workflow_type=workflow_type,
        version=package.version,
        workflow_types=("loop", "order"),
        top_level=package.top_level,
        archive=package.archive(),
        uploaded_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
async def api_schema(tmp_path: Path) -> schemathesis.BaseSchema:
    url = f"sqlite+aiosqlite:///{tmp_path / 'views.db'}"
    setup = connect(url)
    await migrate(setup)
    await populate(session_factory(setup))
    await setup.dispose()
    # The ASGI test client runs the app on its own event loop: a pool-less engine opens each
    # connection on whichever loop asks for it.
    served = connect(url, poolclass=NullPool)
    catalog = MemoryCatalog()
    await catalog.deploy([_record("order"), _record("loop")])
    app = create_app(
        Settings(payload_limit_bytes=4096),
        session_factory=session_factory(served),
        command_sink=MemorySink(),
        poll_interval=0.01,
        catalog=catalog,
        package_limit=16 * 1024,
        query_desk=MemoryDesk(lambda q: answered(q, {"asked": q.name})),
        schedules=MemorySchedules(),
    )
    # 400 is aion's answer to input the schema cannot describe (ids with control characters
    # or surrounding spaces, a well-formed cursor the API never issued); 404 to an unknown id;
    # 409 to a wait on a command the engine refused, a deletion of a version in use, a move
    # of a closed run; 413 and 422 to uploads that are no package (the schema says "binary").
    statuses = ["2xx", "400", "404", "409", "413", "422"]
    config = schemathesis.Config.from_dict(
        {"checks": {"positive_data_acceptance": {"expected-statuses": statuses}}}
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def _operations(schema: schemathesis.BaseSchema) -> list[schemathesis.APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def test_openapi_contract(api_schema: schemathesis.BaseSchema) -> None:
    # schemathesis's pytest plugin does not run under pytest 9 (it reads a removed private
    # attribute), so each operation's strategy is driven by hypothesis here instead.
    operations = _operations(api_schema)
    assert len(operations) == 35
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            if case.query and "wait" in case.query:
                case.query["wait"] = 0  # long-polls are tested directly; keep fuzzing fast
            # a query's timeout near 0 s is answered 504 (no engine in time), rightly: the
            # desk here answers at once, given any time at all
            if case.query and "timeout" in case.query:
                case.query["timeout"] = 5
            if isinstance(case.body, dict) and "timeout" in case.body:
                case.body["timeout"] = 5
            case.call_and_validate()

        run()
