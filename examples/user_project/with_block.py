"""AionStack outside pytest: a plain ``with`` block, as a script or a notebook would use it.

    TESTCONTAINERS_RYUK_DISABLED=true python with_block.py

Prints the greetings and exits 0 when they are what the workflow should return.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from aion.testing import run_workflow
from aion.testing.containers import AionStack

PROJECT = Path(__file__).resolve().parent
EXPECTED = {"ada": "hello, ada", "?": "failed: ValueError: nobody to greet"}


async def greet(stack: AionStack) -> Any:
    """Run greet-all through the stack's API and return its result."""
    async with stack.client() as client:
        return await run_workflow(client, "greet-all", ["ada", ""], id="with-block-1")


def main() -> int:
    """Start the stack, run one workflow, stop the stack (whatever happened)."""
    with AionStack(workflows=["greetings.workflows"], source=PROJECT) as stack:
        print(f"aion API at {stack.api_url}, Kafka at {stack.bootstrap_servers}")  # noqa: T201
        result = asyncio.run(greet(stack))
    print(f"greet-all: {result}")  # noqa: T201
    return 0 if result == EXPECTED else 1


if __name__ == "__main__":
    sys.exit(main())
