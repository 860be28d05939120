"""Placeholder: the demo runner lands in the next commit."""

from __future__ import annotations

from aion_dev.stack import Stack

__all__ = ["run_demo"]


async def run_demo(stack: Stack, cases_module: str) -> int:
    """Run the demo cases from ``cases_module`` against ``stack``; 0 if all as expected."""
    raise NotImplementedError(f"demo of {cases_module} on {stack.api_url}")
