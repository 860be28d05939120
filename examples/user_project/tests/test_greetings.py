"""The project's workflows, end to end, on a containerised aion (Kafka, engine, watcher,
projector, API) started once for the session by the ``aion_container_stack`` fixture."""

from __future__ import annotations

from aion.testing import assert_history, run_workflow, wait_for_workflow
from aion.testing.containers import AionStack


async def test_greet_all_fans_out_to_children(aion_container_stack: AionStack) -> None:
    async with aion_container_stack.client() as client:
        result = await run_workflow(client, "greet-all", ["ada", "grace", ""], id="hello-1")
        assert result == {
            "ada": "hello, ada",
            "grace": "hello, grace",
            "?": "failed: ValueError: nobody to greet",
        }
        await assert_history(
            client,
            "hello-1",
            ["WorkflowStarted", "ChildWorkflowScheduled", "WorkflowCompleted"],
            exact=False,
        )
        parent = await wait_for_workflow(client, "hello-1")
        ada = next(c for c in parent.children if c.result == "hello, ada")
        # The child's greeting came from the compose_greeting activity, run by the worker.
        await assert_history(
            client,
            ada.child_workflow_id,
            ["WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted"],
            exact=False,
        )


async def test_sign_off_waits_for_its_signal(aion_container_stack: AionStack) -> None:
    async with aion_container_stack.client() as client:
        await client.start("sign-off", "contract.pdf", id="sign-1")
        await client.signal("sign-1", "approve", {"by": "ana"})
        run = await wait_for_workflow(client, "sign-1")
        assert run.result == {"document": "contract.pdf", "approved_by": "ana"}
        assert run.event_types.count("SignalReceived") == 1


def test_the_broker_is_reachable_from_the_host(aion_container_stack: AionStack) -> None:
    host, _, port = aion_container_stack.bootstrap_servers.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
