"""Importing the user's modules: every failure becomes one message a person can act on."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from aion_common.runtime.user_modules import UserCodeError, import_user_module


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n.startswith("um_")]:
            del sys.modules[name]


def _error(name: str) -> str:
    with pytest.raises(UserCodeError) as caught:
        import_user_module(name, kind="workflow")
    return str(caught.value)


def test_a_syntax_error_shows_the_file_line_and_caret(on_path: Path) -> None:
    (on_path / "um_syntax.py").write_text("x = 1\ndef f(:\n    pass\n")
    message = _error("um_syntax")
    assert message.startswith("cannot import workflow module 'um_syntax': SyntaxError")
    assert f'File "{on_path / "um_syntax.py"}", line 2' in message
    assert "def f(:" in message
    assert "importlib" not in message
    assert "user_modules.py" not in message


def test_an_error_raised_while_importing_shows_the_users_frames(on_path: Path) -> None:
    (on_path / "um_helper.py").write_text("def boom():\n    raise RuntimeError('no config')\n")
    (on_path / "um_raises.py").write_text("import um_helper\num_helper.boom()\n")
    message = _error("um_raises")
    assert "RuntimeError: no config" in message
    assert f'File "{on_path / "um_raises.py"}", line 2, in <module>' in message
    assert f'File "{on_path / "um_helper.py"}", line 2, in boom' in message


def test_a_missing_dependency_is_named(on_path: Path) -> None:
    (on_path / "um_dep.py").write_text("import um_not_installed\n")
    message = _error("um_dep")
    assert "ModuleNotFoundError: No module named 'um_not_installed'" in message
    assert 'um_dep.py", line 1' in message


def test_a_file_name_given_for_a_module_gets_the_module_name() -> None:
    message = _error("greetings.py")
    assert "give a module name, not a file name: 'greetings' for 'greetings.py'" in message


def test_a_module_not_on_the_path_says_where_it_is_looked_up() -> None:
    message = _error("um_nowhere")
    assert "No module named 'um_nowhere'" in message
    assert "is um_nowhere.py (or the package um_nowhere/) in the directory you started from" in (
        message
    )


def test_a_module_that_imports_is_returned(on_path: Path) -> None:
    (on_path / "um_fine.py").write_text("VALUE = 3\n")
    assert import_user_module("um_fine", kind="activity").VALUE == 3
