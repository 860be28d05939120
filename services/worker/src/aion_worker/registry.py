"""Which activities one worker runs: name → ``@activity.defn`` function.

:func:`load_modules` imports the user's modules and registers every decorated function found
in them and in their imported submodules, as the engine does for workflows.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from aion import activity
from aion_common.domain import InvalidInput
from aion_common.runtime.user_modules import import_user_module

__all__ = ["ActivityRegistry", "load_modules"]


class ActivityRegistry:
    """The activity types one worker can run, by name."""

    __slots__ = ("_activities",)

    def __init__(self) -> None:
        self._activities: dict[str, activity.ActivityDefinition] = {}

    def register(self, fn: Callable[..., Any]) -> activity.ActivityDefinition:
        """Register an ``@activity.defn`` function (a plain function is defined first)."""
        found = activity.definition(fn) or activity.definition(activity.defn(fn))
        assert found is not None
        existing = self._activities.get(found.name)
        if existing is not None and existing.fn is not found.fn:
            raise InvalidInput(
                f"activity type {found.name!r} is defined twice: by {_where(existing.fn)} "
                f"and by {_where(found.fn)}"
            )
        self._activities[found.name] = found
        return found

    def add_module(self, module: ModuleType) -> None:
        """Register every ``@activity.defn`` function ``module`` holds."""
        for value in list(vars(module).values()):
            if activity.definition(value) is not None:
                self.register(value)

    def get(self, name: str) -> activity.ActivityDefinition | None:
        """The activity registered as ``name``, or None."""
        return self._activities.get(name)

    def names(self) -> tuple[str, ...]:
        """Every registered activity name, sorted."""
        return tuple(sorted(self._activities))


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', fn)}"


def load_modules(modules: Iterable[str], registry: ActivityRegistry) -> tuple[str, ...]:
    """Import the user's activity modules, register their activities, return the names."""
    for name in modules:
        import_user_module(name, kind="activity")  # UserCodeError says why, where and what to do
        prefix = name + "."
        for loaded_name, module in list(sys.modules.items()):
            if module is not None and (loaded_name == name or loaded_name.startswith(prefix)):
                registry.add_module(module)
    return registry.names()
