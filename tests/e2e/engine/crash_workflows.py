"""Workflows of the engine e2e tests, registered in the DEFAULT registry.

The engine under test is a subprocess (``python -m aion_engine --workflows
tests.e2e.engine.crash_workflows``), so these register through ``@workflow.defn`` exactly as a
user's module would.
"""

from __future__ import annotations

from typing import Any

from aion import workflow


def expected_result(spec: dict[str, Any]) -> int:
    """What ``e2e.parent`` returns for ``spec``."""
    return sum(spec["base"] * 10 + i for i in range(spec["children"]))


@workflow.defn("e2e.parent")
async def parent(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> int:
    """Start ``children`` children (optionally sleeping first), then sum their results."""
    if spec.get("sleep_parent"):
        await ctx.sleep(0.2)
    handles = [
        await ctx.start_child(
            "e2e.child", {"value": spec["base"] * 10 + i, "sleep": spec.get("sleep_child", False)}
        )
        for i in range(spec["children"])
    ]
    total = 0
    for handle in handles:
        total += await handle.result()
    return total


@workflow.defn("e2e.child")
async def child(ctx: workflow.WorkflowContext, spec: dict[str, Any]) -> int:
    """Return ``value``, after a durable 0.2 s sleep if asked."""
    if spec["sleep"]:
        await ctx.sleep(0.2)
    return int(spec["value"])


def _kill_before_commit(after: int) -> None:
    """Fault injection for ``test_engine_changelog_kill``: SIGKILL this engine process once
    the ``after``-th transaction's changelog records are acknowledged by the broker, before
    that transaction commits."""
    import os
    import signal

    from aion_engine import service

    real = service.write_changes
    calls = [0]

    async def write_then_die(*args: Any, **kwargs: Any) -> Any:
        written = await real(*args, **kwargs)
        calls[0] += 1
        if calls[0] >= after:
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    service.write_changes = write_then_die  # type: ignore[assignment]


def _install_faults() -> None:
    import os

    after = os.environ.get("AION_TEST_KILL_BEFORE_COMMIT")
    if after:
        _kill_before_commit(int(after))


_install_faults()
