"""Importing the user's modules (``--workflows``, ``--activities``) with errors people can act on.

Whatever goes wrong while a user's module is imported — it is not on the path, a file name was
given for a module name, it has a syntax error, it raises, or it imports something missing — is
reported as one :class:`UserCodeError` whose message names the module, the exception and the
lines of the user's own files that led to it (the import machinery's frames left out), plus a
hint when the fix is a known one. The engine and the worker refuse to start with it (exit code
:data:`EXIT_USER_CODE`), and ``aion dev`` shows it in the terminal instead of restarting them.
"""

from __future__ import annotations

import importlib
import traceback
from types import ModuleType

from aion_common.domain import InvalidInput

__all__ = ["EXIT_USER_CODE", "UserCodeError", "import_user_module"]

EXIT_USER_CODE = 2
"""How a service exits when the user's code or configuration keeps it from starting: restarting
it cannot help (``aion dev`` reports it and stops instead)."""

_MACHINERY = ("<frozen importlib", importlib.__file__ or "importlib")


class UserCodeError(InvalidInput):
    """The user's module could not be imported; the message says why, where and what to do."""


def import_user_module(name: str, *, kind: str) -> ModuleType:
    """Import ``name`` (a ``kind`` module: ``workflow``, ``activity``) or raise
    :class:`UserCodeError`."""
    try:
        return importlib.import_module(name)
    except Exception as err:
        raise UserCodeError(_explain(name, kind, err)) from err


def _explain(name: str, kind: str, err: Exception) -> str:
    head = f"cannot import {kind} module {name!r}"
    missing = getattr(err, "name", None) if isinstance(err, ModuleNotFoundError) else None
    if missing is not None and (name == missing or name.startswith(f"{missing}.")):
        return f"{head}: {err}\n  {_not_found_hint(name)}"
    lines = [
        line
        for frame in traceback.extract_tb(err.__traceback__)
        if frame.filename != __file__ and not frame.filename.startswith(_MACHINERY)
        for line in traceback.format_list([frame])
    ]
    detail = "".join(["Traceback (most recent call last):\n", *lines] if lines else []) + "".join(
        traceback.format_exception_only(err)
    )
    return f"{head}: {type(err).__name__}: {err}\n{detail.rstrip()}"


def _not_found_hint(name: str) -> str:
    if name.endswith(".py") or "/" in name:
        module = name.removesuffix(".py").replace("/", ".").strip(".")
        return (
            f"give a module name, not a file name: {module!r} for {name!r} "
            "(the directory it is in must be the working directory or on PYTHONPATH)"
        )
    top = name.split(".", 1)[0]
    return (
        f"is {top}.py (or the package {top}/) in the directory you started from? "
        "Module names are looked up in the working directory and on PYTHONPATH"
    )
