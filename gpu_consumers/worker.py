"""A GPU consumer process: ``python -m gpu_consumers.worker --bootstrap HOST:PORT``.

Serves the evidence job kinds of ``KIBOTOS_EVIDENCE_JOBS`` (or ``--kinds``) with
``KIBOTOS_GPU_ACTORS_PER_KIND`` warm Ray actors each. Run one per node; join an existing
Ray cluster with ``--ray-address``. SIGTERM drains in-flight jobs and exits.
"""

from __future__ import annotations

import logging

from kibotos.runtime.process import process_parser, start_process


def main(argv: list[str] | None = None) -> None:
    parser = process_parser(__doc__)
    parser.add_argument("--kinds", help="comma-separated job kinds (default: KIBOTOS_EVIDENCE_JOBS)")
    parser.add_argument("--actors", type=int, help="warm actors per kind")
    parser.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    proc = start_process(parser, argv)
    args = proc.args
    kinds = tuple(k for k in args.kinds.split(",") if k) if args.kinds else None

    from gpu_consumers.consumer import JobConsumer

    consumer = JobConsumer(proc.settings, proc.bootstrap, kinds, args.actors, args.ray_address)
    logging.getLogger("kibotos.gpu").info("serving %s", ", ".join(consumer.kinds))
    try:
        consumer.run(proc.stop)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
