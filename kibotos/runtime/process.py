"""What every standalone consumer process shares: its command line, logging,
``/metrics`` and a stop event set by SIGTERM/SIGINT.

``python -m streams.sink``, ``python -m streams.novelty_worker`` and ``python -m gpu_consumers.worker``
are built on it (the faust gate workers are not: faust runs its own)::

    parser = process_parser("ClickHouse sink: ...")
    parser.add_argument(...)            # the process's own options
    proc = start_process(parser, argv)  # parsed args, settings, bootstrap, stop event
"""

from __future__ import annotations

import argparse
import signal
import threading
from dataclasses import dataclass

from kibotos.config.settings import Settings


@dataclass
class Process:
    args: argparse.Namespace
    settings: Settings
    bootstrap: str
    stop: threading.Event


def process_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every process takes: --bootstrap, --metrics-port,
    --metrics-host, --loglevel."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics binds (0.0.0.0 in a container)")
    parser.add_argument("--loglevel", help="log level (default: KIBOTOS_LOG_LEVEL)")
    return parser


def start_process(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> Process:
    """Parse ``argv``, read the settings (``KIBOTOS_*``), set up logging and /metrics,
    and return a stop event that SIGTERM or SIGINT sets. Exits with a usage error when
    no bootstrap servers are known."""
    from kibotos.runtime.logs import setup_logging
    from kibotos.runtime.metrics import serve as serve_metrics

    args = parser.parse_args(argv)
    settings = Settings()
    bootstrap = args.bootstrap or settings.bootstrap_servers
    if not bootstrap:
        parser.error("no bootstrap servers: pass --bootstrap or set KIBOTOS_BOOTSTRAP_SERVERS")
    setup_logging(settings.log_format, args.loglevel or settings.log_level)
    if args.metrics_port:
        serve_metrics(args.metrics_port, args.metrics_host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return Process(args, settings, bootstrap, stop)
