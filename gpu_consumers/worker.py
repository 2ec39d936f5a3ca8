"""A GPU consumer process: ``python -m gpu_consumers.worker --bootstrap HOST:PORT``.

Serves the evidence job kinds of ``KIBOTOS_EVIDENCE_JOBS`` (or ``--kinds``) with
``KIBOTOS_GPU_ACTORS_PER_KIND`` warm Ray actors each. Run one per node; join an existing
Ray cluster with ``--ray-address``. SIGTERM drains in-flight jobs and exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from kibotos.logs import setup_logging
from kibotos.metrics import serve as serve_metrics
from kibotos.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings)")
    parser.add_argument("--kinds", help="comma-separated job kinds (default: KIBOTOS_EVIDENCE_JOBS)")
    parser.add_argument("--actors", type=int, help="warm actors per kind")
    parser.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--loglevel", help="log level (default: KIBOTOS_LOG_LEVEL)")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address /metrics binds (0.0.0.0 in a container)")
    args = parser.parse_args(argv)
    settings = Settings()
    setup_logging(settings.log_format, args.loglevel or settings.log_level)
    if args.metrics_port:
        serve_metrics(args.metrics_port, args.metrics_host)
    bootstrap = args.bootstrap or settings.bootstrap_servers
    if not bootstrap:
        parser.error("no bootstrap servers: pass --bootstrap or set KIBOTOS_BOOTSTRAP_SERVERS")
    kinds = tuple(k for k in args.kinds.split(",") if k) if args.kinds else None

    from gpu_consumers.consumer import JobConsumer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    consumer = JobConsumer(settings, bootstrap, kinds, args.actors, args.ray_address)
    logging.getLogger("kibotos.gpu").info("serving %s", ", ".join(consumer.kinds))
    try:
        consumer.run(stop)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
