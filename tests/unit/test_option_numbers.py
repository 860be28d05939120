"""Every numeric command-line option has a range too (decision 65, amended): a value outside
it is argparse's usage error at once — exit 2, one ``error:`` line naming the option, the value
and the range — and each end of the range is taken. ``AION_RETRY_FOR`` (``--retry-for``'s
default) is named as the variable."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import aion.cli as aion_cli
import aion_dev.__main__ as aion_dev_cli
import aion_engine.__main__ as engine_entry
import aion_projector.api.__main__ as api_entry
import aion_worker.__main__ as worker_entry
from aion._cli_options import retry_for_from_env
from aion_common.settings import (
    SettingsError,
    parse_seconds,
    seconds_option,
    whole_option,
)
from aion_common.testing import _broker_cli, compose
from aion_dev.stack import Stack, StackConfig, StackError
from aion_engine.core import MAX_RESIDENT, EngineCore
from aion_engine.registry import WorkflowRegistry

Parse = Callable[[Sequence[str]], object]

PARSERS: dict[str, Parse] = {
    "aion": lambda argv: aion_cli._parser().parse_args(argv),
    "aion-engine": lambda argv: engine_entry._parse(list(argv)),
    "aion-dev": lambda argv: aion_dev_cli._parser().parse_args(argv),
    "aion-worker": lambda argv: worker_entry._parse(list(argv)),
    "api": lambda argv: api_entry.main(list(argv)),
    "broker": lambda argv: _broker_cli._parser().parse_args(argv),
    "compose": compose.main,
}
NOT_SECONDS = ["inf", "nan", "-1", "1e3", "ten", "1" + "0" * 400]

# (parser, the arguments before the value, the value, the words the error must have)
REFUSALS = [
    *(
        ("aion", ["--retry-for", raw], ["list"], "from 0 to 86400 (a day at most; 0: do not")
        for raw in [*NOT_SECONDS, "86400.5"]
    ),
    ("aion", ["--request-timeout", "0"], ["list"], "from 0.1 to 3600"),
    ("aion", ["start", "t", "--wait", "--timeout", "inf"], [], "from 0 to 86400"),
    ("aion", ["result", "w", "--timeout", "nan"], [], "from 0 to 86400"),
    ("aion", ["run", "move", "w", "v", "--timeout", "86401"], [], "from 0 to 86400"),
    ("aion", ["cancel", "w", "--confirm-timeout", "61"], [], "from 0 to 60"),
    ("aion", ["query", "w", "q", "--timeout", "0"], [], "from 0.1 to 60"),
    ("aion", ["waiting", "w", "--timeout", "inf"], [], "from 0.1 to 60"),
    *(
        ("aion-engine", ["--max-resident", raw], [], "from 0 to 1000000 (per partition")
        for raw in ["-1", "1000001", "inf", "1e6"]
    ),
    *(
        ("aion-dev", ["--engines", raw], [], "a whole number of engines from 1 to 16")
        for raw in ["0", "-3", "17", "10000"]
    ),
    *(
        ("aion-dev", ["--brokers", raw], [], "a whole number of Kafka nodes from 1 to 5")
        for raw in ["0", "-1", "6", "10000"]
    ),
    ("aion-dev", ["--brokers", "2"], [], "invalid choice: 2 (choose from 1, 3, 4, 5)"),
    ("aion-dev", ["--partitions", "0"], [], "from 1 to 1000"),
    ("aion-dev", ["--port", "65536"], [], "a port number from 0 to 65535"),
    ("aion-worker", ["--max-concurrent", "0"], [], "attempts from 1 to 10000"),
    ("aion-worker", ["--max-concurrent", "10001"], [], "attempts from 1 to 10000"),
    ("api", ["--port", "0"], [], "a port number from 1 to 65535"),
    ("broker", ["run", "--data-dir", "d", "--port", "70000"], [], "from 1 to 65535"),
    ("broker", ["stop", "--pid-file", "p", "--timeout", "inf"], [], "from 0 to 3600"),
    ("compose", ["up", "--api-port", "-1"], [], "a port from 1 to 65535"),
]


@pytest.mark.parametrize(
    ("command", "argv", "rest", "words"),
    REFUSALS,
    ids=[f"{c}:{' '.join(a)}"[:60] for c, a, _, _ in REFUSALS],
)
def test_a_value_out_of_range_is_a_usage_error_naming_option_value_and_range(
    command: str,
    argv: list[str],
    rest: list[str],
    words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        PARSERS[command]([*argv, *rest])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    option = [a for a in argv if a.startswith("--")][-1]
    value = argv[argv.index(option) + 1]
    assert f"error: argument {option}: " in error, error
    assert value[:40] in error, error  # a long value is cut short
    assert words in error, error


ACCEPTED = [
    ("aion", ["--retry-for", "0", "list"], "retry_for", 0.0),
    ("aion", ["--retry-for", "86400", "list"], "retry_for", 86400.0),
    ("aion", ["--retry-for", " 0.5 ", "list"], "retry_for", 0.5),
    ("aion", ["result", "w", "--timeout", "86400"], "timeout", 86400.0),
    ("aion", ["cancel", "w", "--confirm-timeout", "60"], "confirm_timeout", 60.0),
    ("aion", ["query", "w", "q", "--timeout", "0.1"], "timeout", 0.1),
    ("aion-engine", ["--max-resident", "0"], "max_resident", 0),
    ("aion-engine", ["--max-resident", "1000000"], "max_resident", MAX_RESIDENT),
    ("aion-engine", [], "max_resident", 10_000),
    ("aion-dev", ["--engines", "1"], "engines", 1),
    ("aion-dev", ["--engines", "16"], "engines", 16),
    ("aion-dev", ["--brokers", "1"], "brokers", 1),
    ("aion-dev", ["--brokers", "3"], "brokers", 3),
    ("aion-dev", ["--brokers", "5"], "brokers", 5),
    ("aion-dev", ["--partitions", "1000"], "partitions", 1000),
    ("aion-dev", ["--port", "0"], "port", 0),
    ("aion-worker", ["--max-concurrent", "10000"], "max_concurrent", 10_000),
    ("broker", ["stop", "--pid-file", "p", "--timeout", "0"], "timeout", 0.0),
]


@pytest.mark.parametrize(("command", "argv", "name", "value"), ACCEPTED)
def test_each_end_of_a_range_is_taken(
    command: str, argv: list[str], name: str, value: float
) -> None:
    args = PARSERS[command](argv)
    assert isinstance(args, argparse.Namespace)
    assert getattr(args, name) == value


@pytest.mark.parametrize("raw", [*NOT_SECONDS, "86401", "\u00b2"])
def test_a_bad_aion_retry_for_is_named_as_the_variable(
    raw: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was argparse's float() of the variable: ``inf`` retried for ever, ``nan`` never."""
    monkeypatch.setenv("AION_RETRY_FOR", raw)
    with pytest.raises(SystemExit) as exited:
        aion_cli.main(["--api", "http://127.0.0.1:9", "list"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("aion: error: AION_RETRY_FOR='"), error
    assert "expected a number of seconds from 0 to 86400" in error


@pytest.mark.parametrize(
    ("raw", "seconds"), [("", 60.0), (" ", 60.0), ("0", 0.0), ("86400", 86400.0)]
)
def test_aion_retry_for_takes_its_range_and_blank_is_the_default(
    raw: str, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AION_RETRY_FOR", raw)
    assert retry_for_from_env() == seconds


def test_the_option_types_say_the_value_and_the_range() -> None:
    engines = whole_option(minimum=1, maximum=16, what="engines", why="one machine")
    with pytest.raises(
        argparse.ArgumentTypeError, match=r"^'0': expected engines from 1 to 16 \(one machine\)$"
    ):
        engines("0")
    wait = seconds_option(minimum=0, maximum=60)
    with pytest.raises(argparse.ArgumentTypeError, match=r"^'x{40}'\.\.\. \(50 chars\): expected"):
        wait("x" * 50)
    assert (engines(" 016 "), wait(".25"), wait("60.000")) == (16, 0.25, 60.0)
    with pytest.raises(
        SettingsError, match=r"^AION_X='nan': expected a number of seconds from 0\.5 to 2$"
    ):
        parse_seconds("AION_X", "nan", minimum=0.5, maximum=2)


def test_aion_dev_refuses_brokers_beside_an_external_kafka_as_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It was a StackError once the stack was built, exit 3 (a failed stack)."""
    with pytest.raises(SystemExit) as exited:
        aion_dev_cli.main(["--brokers", "3", "--kafka", "127.0.0.1:9092"])
    assert exited.value.code == 2
    assert "--brokers 3 starts embedded Kafka nodes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "refused"),
    [
        ({"engines": 0}, "engines=0: expected 1 to 16"),
        ({"engines": 17}, "engines=17: expected 1 to 16"),
        ({"brokers": 2}, "brokers=2: expected 1, or 3 to 5"),
        ({"brokers": 6}, "brokers=6: expected 1, or 3 to 5"),
    ],
)
def test_a_stack_built_in_code_keeps_the_ranges(
    config: dict[str, int], refused: str, tmp_path: Path
) -> None:
    with pytest.raises(StackError, match=refused):
        Stack(StackConfig(home=tmp_path, **config))  # type: ignore[arg-type]


@pytest.mark.parametrize("max_resident", [-1, MAX_RESIDENT + 1])
def test_an_engine_core_built_in_code_keeps_the_max_resident_range(max_resident: int) -> None:
    with pytest.raises(ValueError, match=rf"max_resident={max_resident}: expected 0 to 1000000"):
        EngineCore(WorkflowRegistry(), max_resident=max_resident)
