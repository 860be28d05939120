"""Workflow registration: type name → ``async def run(ctx, input)``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from aion_common.domain import InvalidInput, validate_name
from aion_engine._context import WorkflowContext

__all__ = ["WorkflowFn", "WorkflowRegistry", "default_registry", "defn", "load_modules"]

WorkflowFn = Callable[[WorkflowContext, Any], Coroutine[Any, Any, Any]]
F = TypeVar("F", bound=WorkflowFn)


class WorkflowRegistry:
    """The workflow types one engine can run, by type name."""

    __slots__ = ("_workflows",)

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowFn] = {}

    def register(self, workflow_type: str, fn: WorkflowFn) -> None:
        """Register ``fn`` as ``workflow_type``; a second, different function is refused."""
        validate_name(workflow_type, what="workflow type")
        if not inspect.iscoroutinefunction(fn):
            raise InvalidInput(f"workflow {workflow_type!r} must be an `async def run(ctx, input)`")
        existing = self._workflows.get(workflow_type)
        if existing is not None and existing is not fn:
            raise InvalidInput(f"workflow type {workflow_type!r} is already registered")
        self._workflows[workflow_type] = fn

    def defn(self, workflow_type: str) -> Callable[[F], F]:
        """Decorator: ``@registry.defn("order")`` registers the decorated ``async def``."""

        def decorate(fn: F) -> F:
            self.register(workflow_type, fn)
            return fn

        return decorate

    def get(self, workflow_type: str) -> WorkflowFn | None:
        """The function registered as ``workflow_type``, or None."""
        return self._workflows.get(workflow_type)

    def types(self) -> tuple[str, ...]:
        """Every registered type name, sorted."""
        return tuple(sorted(self._workflows))


default_registry = WorkflowRegistry()
"""The registry ``@workflow.defn`` fills and the engine loads by default."""


def defn(workflow_type: str) -> Callable[[F], F]:
    """Decorator: register an ``async def run(ctx, input)`` as ``workflow_type``."""
    return default_registry.defn(workflow_type)


def load_modules(
    modules: Iterable[str], registry: WorkflowRegistry = default_registry
) -> tuple[str, ...]:
    """Import the user's workflow modules (which register themselves) and return loaded types."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise InvalidInput(f"cannot import workflow module {name!r}: {err}") from err
    return registry.types()
