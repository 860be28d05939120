"""``python -m aion_projector.api [--host H] [--port P]``: the HTTP API on its own."""

from __future__ import annotations

import argparse
import asyncio

from aion_common.settings import Settings
from aion_projector.api._server import run_api


def main(argv: list[str] | None = None) -> None:
    """Serve the API with settings from ``AION_*`` variables."""
    parser = argparse.ArgumentParser(prog="python -m aion_projector.api")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    asyncio.run(run_api(Settings.from_env(), args.host, args.port))


if __name__ == "__main__":
    main()
