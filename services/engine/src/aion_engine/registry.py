"""Which workflow types one engine runs: type name → ``async def run(ctx, input)``.

Workflow code marks its functions with ``@aion.workflow.defn``; :func:`load_modules` imports
the user's modules and registers every decorated function it finds in them (and in their
submodules that are imported), so nothing depends on import-time side effects in a global.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Coroutine, Iterable
from types import ModuleType
from typing import Any, TypeVar

from aion import workflow
from aion_common.domain import InvalidInput, validate_name
from aion_common.runtime.user_modules import import_user_module
from aion_engine import _sandbox

__all__ = ["WorkflowFn", "WorkflowRegistry", "load_modules"]

WorkflowFn = Callable[..., Coroutine[Any, Any, Any]]
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
            raise InvalidInput(
                f"workflow type {workflow_type!r} is defined twice: by "
                f"{_where(existing)} and by {_where(fn)}"
            )
        self._workflows[workflow_type] = fn

    def defn(self, workflow_type: str) -> Callable[[F], F]:
        """Decorator: ``@registry.defn("order")`` defines the function as
        ``@workflow.defn("order")`` does and registers it here."""

        def decorate(fn: F) -> F:
            workflow.defn(workflow_type)(fn)
            self.register(workflow_type, fn)
            return fn

        return decorate

    def add_module(self, module: ModuleType) -> None:
        """Register every ``@workflow.defn`` function ``module`` holds."""
        for value in list(vars(module).values()):
            found = workflow.definition(value)
            if found is not None:
                self.register(found.name, found.fn)

    def get(self, workflow_type: str) -> WorkflowFn | None:
        """The function registered as ``workflow_type``, or None."""
        return self._workflows.get(workflow_type)

    def types(self) -> tuple[str, ...]:
        """Every registered type name, sorted."""
        return tuple(sorted(self._workflows))


def _where(fn: WorkflowFn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def load_modules(modules: Iterable[str], registry: WorkflowRegistry) -> tuple[str, ...]:
    """Import the user's workflow modules, register their workflows, return the loaded types.

    The sandbox is installed first, so workflow modules see the guarded ``time.sleep``.
    """
    _sandbox.install()
    for name in modules:
        import_user_module(name, kind="workflow")  # UserCodeError says why, where and what to do
        prefix = name + "."
        for loaded_name, module in list(sys.modules.items()):
            if module is not None and (loaded_name == name or loaded_name.startswith(prefix)):
                registry.add_module(module)
    return registry.types()
