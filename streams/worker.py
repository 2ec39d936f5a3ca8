"""A gate worker process: ``python -m streams.worker --bootstrap HOST:PORT --web-port N``.

Settings come from ``KIBOTOS_*`` environment variables (one typed ``Settings``). Run as
many as there are partitions to share; faust's consumer group balances them. SIGTERM
stops it cleanly.

Memory ceiling: before it joins the group the worker caps its address space
(``RLIMIT_AS``) at ``limits.worker_memory_bytes`` of the gate config, or — when that is 0 —
at its own size once the gate code is loaded plus ``DEFAULT_HEADROOM``. An allocation past
the ceiling raises ``MemoryError`` inside the gate, which ``processors.base.run_gate``
turns into ``resource_limit_exceeded`` (limit ``worker_memory_bytes``); what the gate held
is freed and the worker goes on with the next bundle. The bounded reads of
``kibotos.bundle`` are the first defence; the ceiling catches what they do not foresee.
"""

from __future__ import annotations

import argparse
import resource

from kibotos.config.gates import load_config
from kibotos.config.settings import Settings
from kibotos.runtime.logs import setup_logging
from streams.app import create_app

DEFAULT_HEADROOM = 3 << 30  # address space a gate may add above the loaded worker


def address_space_bytes() -> int:
    """This process's virtual size (``VmSize``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def apply_memory_ceiling(configured: int, headroom: int = DEFAULT_HEADROOM) -> int | None:
    """Cap this process's address space (``RLIMIT_AS``): ``configured`` bytes, or when 0 the
    current size plus ``headroom``, never above a hard limit already set. Loads the gate
    code first (robot kinematics pull in torch) so the ceiling sits above what every
    worker maps anyway. Returns the ceiling, or None where the platform has no RLIMIT_AS."""
    if not hasattr(resource, "RLIMIT_AS"):
        return None
    import kibotos.robots.kinematics  # noqa: F401
    import processors.gates  # noqa: F401  (every gate module and what it imports)

    ceiling = configured if configured > 0 else address_space_bytes() + headroom
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    return ceiling


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
    ceiling = apply_memory_ceiling(config.limits.worker_memory_bytes)
    if ceiling:
        import logging

        logging.getLogger("kibotos.worker").info("memory ceiling (RLIMIT_AS) %d MiB", ceiling >> 20)
    app = create_app(settings, bootstrap, config, args.web_port, args.web_bind)
    from faust.worker import Worker

    # keep the JSON handler set up above instead of faust's own logging set-up
    Worker(app, loglevel=level, quiet=True, redirect_stdouts=False,
           override_logging=False).execute_from_commandline()


if __name__ == "__main__":
    main()
