"""A gate worker process: ``python -m streams.worker --bootstrap HOST:PORT --web-port N``.

Settings come from ``KIBOTOS_*`` environment variables (one typed ``Settings``). Run as
many as there are partitions to share; faust's consumer group balances them. SIGTERM
stops it cleanly.
"""

from __future__ import annotations

import argparse

from kibotos.gate_config import load_config
from kibotos.logs import setup_logging
from kibotos.settings import Settings
from streams.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=False, help="Kafka bootstrap servers (default: settings)")
    parser.add_argument("--web-port", type=int, required=True, help="faust web port (loopback), unique per worker")
    parser.add_argument("--web-bind", default="127.0.0.1",
                        help="address the faust web server (/metrics) binds (0.0.0.0 in a container)")
    parser.add_argument("--loglevel", help="log level (default: KIBOTOS_LOG_LEVEL)")
    args = parser.parse_args(argv)
    settings = Settings()
    bootstrap = args.bootstrap or settings.bootstrap_servers
    if not bootstrap:
        parser.error("no bootstrap servers: pass --bootstrap or set KIBOTOS_BOOTSTRAP_SERVERS")
    config = load_config(settings.gate_config_path)
    level = args.loglevel or settings.log_level
    setup_logging(settings.log_format, level)
    app = create_app(settings, bootstrap, config, args.web_port, args.web_bind)
    from faust.worker import Worker

    # keep the JSON handler set up above instead of faust's own logging set-up
    Worker(app, loglevel=level, quiet=True, redirect_stdouts=False,
           override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
