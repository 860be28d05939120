"""``python -m aion_projector.api [--host H] [--port P]``: the HTTP API on its own."""

from __future__ import annotations

import argparse
import os

from aion_common.runtime.logging import configure_logging
from aion_common.runtime.loop import run as run_loop
from aion_common.settings import MAX_PORT, Settings, SettingsError, whole_option
from aion_projector.api._server import (
    package_limit_from_env,
    produce_timeout_from_env,
    run_api,
)


def main(argv: list[str] | None = None) -> None:
    """Serve the API with settings from ``AION_*`` variables."""
    parser = argparse.ArgumentParser(prog="python -m aion_projector.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=whole_option(minimum=1, maximum=MAX_PORT, what="a port number"), default=8080
    )
    args = parser.parse_args(argv)
    configure_logging()  # JSON lines on stderr, as every service (uvicorn keeps its own)
    try:
        settings = Settings.from_env()
        produce_timeout_s = produce_timeout_from_env()
        package_limit_from_env(os.environ)  # run_api reads it in the loop: a traceback there
    except SettingsError as err:
        parser.exit(2, f"aion API refused to start: {err}\n")
    run_loop(run_api(settings, args.host, args.port, produce_timeout_s=produce_timeout_s))


if __name__ == "__main__":
    main()
