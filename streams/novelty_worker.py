"""The novelty stage as a process of its own: ``python -m streams.novelty_worker``.

``evidence.completed`` → ``novelty.completed`` (or ``verification.rejected`` for a
same-miner duplicate / extreme synthetic artifacts), judged against the novelty index in
ClickHouse (``kibotos.novelty``). It needs a ClickHouse client, so it does not run in the
faust gate workers: in the embedded stack a thread of the stack process runs it on the
stack's own (locked) chdb client (``start_novelty_thread``); a deployment runs one or a
few of these processes with ``KIBOTOS_CLICKHOUSE_DSN`` pointing at the server — they
share the input partitions through one consumer group.
"""

from __future__ import annotations

import logging
import threading

from kibotos.config.settings import Settings
from kibotos.objectstore import store_from_settings
from kibotos.runtime.process import process_parser, start_process
from streams.stage import load_fault_policy
from streams.stage_consumer import StageConsumer
from streams.stages import NoveltyStage
from topics.catalogue import Catalogue
from topics.clients import group_id

log = logging.getLogger("kibotos.streams")


def novelty_group(settings: Settings) -> str:
    return group_id(settings, "novelty")


def build_novelty_consumer(settings: Settings, client, bootstrap: str, store=None) -> StageConsumer:
    """The novelty stage on ``client`` (a clickhouse-connect client on a migrated
    database) as a consumer of ``evidence.completed``."""
    from kibotos.novelty.checker import NoveltyChecker
    from kibotos.novelty.config import load_novelty_config

    catalogue = Catalogue.from_settings(settings)
    checker = NoveltyChecker(client, load_novelty_config(settings.novelty_config_path))
    stage = NoveltyStage(catalogue, store or store_from_settings(settings), checker)
    return StageConsumer(stage, catalogue, bootstrap, novelty_group(settings),
                         policy=load_fault_policy(settings.fault_config_path))


def start_novelty_thread(settings: Settings, client, bootstrap: str, stop: threading.Event,
                         store=None) -> tuple[threading.Thread, StageConsumer]:
    """Run the novelty consumer in a daemon thread until ``stop`` is set (the embedded
    stack). The caller closes the returned consumer after joining the thread."""
    consumer = build_novelty_consumer(settings, client, bootstrap, store)
    thread = threading.Thread(target=consumer.run, args=(stop,), name="novelty", daemon=True)
    thread.start()
    return thread, consumer


def main(argv: list[str] | None = None) -> None:
    from kibotos.warehouse import open_client

    parser = process_parser("Novelty stage: evidence.completed -> novelty.completed")
    proc = start_process(parser, argv)
    client = open_client(proc.settings.chdb_dsn)
    consumer = build_novelty_consumer(proc.settings, client, proc.bootstrap)
    log.info("novelty: consuming as %s", novelty_group(proc.settings))
    try:
        consumer.run(proc.stop)
    finally:
        consumer.close()
        client.close()


if __name__ == "__main__":
    main()
