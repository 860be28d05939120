"""``aion-ingress`` (also ``aion ingress``): map the user's topics to workflow commands until
SIGTERM.

``--config FILE`` (or ``AION_INGRESS_CONFIG``) names the mapping (``aion_ingress.config``);
``--check`` only validates it and exits. The rest comes from ``AION_*`` settings and
``AION_INGRESS_*`` (:class:`~aion_ingress.options.IngressOptions`). JSON logs to stderr.
Exit codes: 0 stopped cleanly, 1 stopped by an error, 2 the configuration or settings are bad.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aion_common.domain import AionError
from aion_common.runtime import configure_logging, run_until_signalled
from aion_common.runtime.loop import run as run_loop
from aion_common.settings import Settings, SettingsError
from aion_ingress.config import IngressConfigError, load_config
from aion_ingress.options import IngressOptions
from aion_ingress.service import IngressService

_log = logging.getLogger("aion.ingress")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aion ingress", description=__doc__)
    parser.add_argument("--config", metavar="FILE", help="the mapping file (YAML, TOML or JSON)")
    parser.add_argument(
        "--check", action="store_true", help="validate the configuration, print it, and exit"
    )
    parser.add_argument("--log-level", default=os.environ.get("AION_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def _config_path(options: IngressOptions) -> str:
    if not options.config:
        raise SettingsError("no configuration: pass --config FILE or set AION_INGRESS_CONFIG")
    return options.config


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aion-ingress`` console script."""
    args = _parse(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        options = IngressOptions.from_env(config=args.config)
        config = load_config(_config_path(options))
    except IngressConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    except (SettingsError, AionError) as err:
        _log.error("ingress refused to start: %s", err)
        return 2
    if args.check:
        for route in config.routes:
            target = route.workflow_type.text if route.workflow_type else "-"
            signal = route.signal.text if route.signal else "-"
            sys.stdout.write(
                f"{route.where}: {route.topic} ({route.format.name}) -> {route.action.value} "
                f"type={target} id={route.workflow_id.text} signal={signal}\n"
            )
        sys.stdout.write(
            f"{config.source}: ok, group {settings.topic_prefix}.ingress.{config.name}\n"
        )
        return 0

    async def serve() -> int:
        service = IngressService(settings, config, options)
        return await run_until_signalled(service)

    try:
        return run_loop(serve())
    except AionError as err:
        _log.error("ingress stopped: %s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
