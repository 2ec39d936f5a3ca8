"""Wiring of the stages to topics as faust-streaming agents: one agent per gate plus the
decision agent. The agents only move bytes; the logic lives in ``streams.stages``.

Settings follow the Tansu measurements in ARCHITECTURE.md (short session timeouts, one
``web_port`` per worker bound to loopback, topics created up front, no faust Tables).
Processing is at-least-once: an event's offset is committed after its outputs were
sent, and every effect downstream is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import faust

from kibotos.config.gates import GateConfig
from kibotos.config.settings import Settings
from kibotos.objectstore import store_from_settings
from kibotos.runtime.metrics import render as render_metrics
from kibotos.scoring import load_scoring_config
from streams.stage import load_fault_policy
from streams.stages import Record, build_stages, handle_observed, stage_inputs
from topics.catalogue import Catalogue
from topics.clients import group_id

log = logging.getLogger("kibotos.streams")


# faust's aiokafka driver has every fetch wait up to 1.5 s for data (hard-coded). A
# broker that answers a waiting fetch only when the wait ends (Tansu, measured: ~0.65 s
# per topic hop) then adds that much latency to every hop of the chain: a record one
# stage sends waits, on average, half a fetch wait before the next stage sees it. Capped
# here: at 100 ms a lone small episode spent ~350 ms between its gates (7 hops), at 20 ms
# ~170 ms (issue 17, kibotos bench pipeline's lone_small), for ~50 idle fetches/s per
# consumer. While a lone submission moves through the worker (at most one record in
# hand, at most FETCH_LONE_RECORDS taken in the last second, the last one less than
# FETCH_BUSY_WINDOW_S ago) each fetch waits only FETCH_BUSY_WAIT_MS: the next stage's
# record is on its way, and the idle rate of fetches stays what it was. With more
# records the worker has a backlog: a record that waits for a fetch waits behind work
# anyway, and short fetches all the time took the CPU the gates needed (issue 17: a
# fetch costs ~1 ms of CPU in the worker and Tansu together; a 4 ms wait throughout
# raised the stack's CPU per episode by a fifth to a half).
FETCH_MAX_WAIT_MS = 20
FETCH_BUSY_WAIT_MS = 4
FETCH_BUSY_WINDOW_S = 0.5
FETCH_LONE_RECORDS = 8  # one submission's hops through the worker (received, gates, evidence)


class FetchWait:
    """The wait of the worker's next fetch: short while a lone record moves through it,
    the idle wait otherwise. The agents (on faust's loop) mark their work; the consumer's
    fetcher (on its own thread) reads ``ms`` for each fetch request it builds."""

    def __init__(self, idle_ms: int = FETCH_MAX_WAIT_MS, busy_ms: int = FETCH_BUSY_WAIT_MS,
                 window_s: float = FETCH_BUSY_WINDOW_S, lone_records: int = FETCH_LONE_RECORDS):
        self.idle_ms, self.busy_ms, self.window_s, self.lone_records = idle_ms, busy_ms, window_s, lone_records
        self.in_hand = 0
        self.last = float("-inf")
        self._taken: deque[float] = deque()  # when each record of the last second was taken
        self.recent = 0  # records taken in the second before the last one (read by the fetcher)

    def begin(self) -> None:
        self.in_hand += 1
        self.last = now = time.monotonic()
        self._taken.append(now)
        while self._taken and self._taken[0] < now - 1.0:
            self._taken.popleft()
        self.recent = len(self._taken)

    def end(self) -> None:
        self.in_hand = max(0, self.in_hand - 1)
        self.last = time.monotonic()

    @property
    def ms(self) -> int:
        if self.in_hand > 1 or self.recent > self.lone_records:
            return self.idle_ms  # a backlog
        if self.in_hand == 1 or time.monotonic() - self.last < self.window_s:
            return min(self.busy_ms, self.idle_ms)
        return self.idle_ms


FETCH_WAIT = FetchWait()


def _adaptive(fetcher_cls: type) -> type:
    """``fetcher_cls`` whose fetch requests wait ``FETCH_WAIT.ms`` (aiokafka reads
    ``_fetch_max_wait_ms`` each time it builds one)."""

    class AdaptiveFetcher(fetcher_cls):
        @property
        def _fetch_max_wait_ms(self) -> int:
            return FETCH_WAIT.ms

        @_fetch_max_wait_ms.setter
        def _fetch_max_wait_ms(self, value: int) -> None:  # the constructor's value: FETCH_WAIT decides
            pass

    return AdaptiveFetcher


def _cap_fetch_wait() -> None:
    from faust.transport.drivers import aiokafka as driver

    base = driver.aiokafka.AIOKafkaConsumer
    if getattr(base, "kibotos_fetch_cap", False):
        return

    # the base is the class faust's driver holds at run time, so mypy cannot see it as a type
    class CappedFetchConsumer(base):  # type: ignore[valid-type, misc]
        kibotos_fetch_cap = True

        def __init__(self, *args, **kwargs):
            kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), FETCH_MAX_WAIT_MS)
            super().__init__(*args, **kwargs)

        async def start(self):
            await super().start()
            fetcher = getattr(self, "_fetcher", None)
            if fetcher is not None and "_fetch_max_wait_ms" in vars(fetcher):
                fetcher.__class__ = _adaptive(type(fetcher))
                log.info("fetch wait %d ms, %d ms while busy", FETCH_WAIT.idle_ms, FETCH_WAIT.busy_ms)

    driver.aiokafka.AIOKafkaConsumer = CappedFetchConsumer


def app_id(settings: Settings) -> str:
    """The consumer group of the gate workers (namespaced like the topics)."""
    return group_id(settings, "gates")


def create_app(settings: Settings, bootstrap: str, config: GateConfig, web_port: int,
               web_bind: str = "127.0.0.1") -> faust.App:
    catalogue = Catalogue.from_settings(settings)
    store = store_from_settings(settings)
    policy = load_fault_policy(settings.fault_config_path)  # validator-fault retries
    _cap_fetch_wait()
    datadir = settings.home.resolve() / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings),
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # faust keeps per-app state in a folder (default: the current directory)
        datadir=str(datadir / "{conf.name}-data"),
        autodiscover=False,
        web_enabled=True,
        web_port=web_port,
        web_bind=web_bind,  # the faust web server: /metrics for Prometheus
        web_host="127.0.0.1",
        topic_partitions=catalogue.partitions,
        topic_allow_declare=False,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=10,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # one record per produce request: Tansu under-reports the high watermark of
        # multi-record batches, which would hide records from consumers
        producer_max_batch_size=1,
        producer_linger=0.0,
        stream_wait_empty=False,
    )

    def faust_topic(spec):
        return app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=spec.partitions, internal=False)

    for stage in build_stages(catalogue, store, config, load_scoring_config(settings.scoring_config_path),
                              settings.evidence_jobs, novelty=settings.novelty):
        out_topics = {spec.name: faust_topic(spec) for spec in stage.outputs}
        channel = faust_topic(stage_inputs(stage)[0]) if len(stage_inputs(stage)) == 1 else \
            app.topic(*[s.name for s in stage_inputs(stage)], key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

        def make_agent(stage=stage, out_topics=out_topics):
            async def agent(stream):
                loop = asyncio.get_running_loop()
                async for event in stream.events():
                    msg = event.message
                    record = Record(msg.topic, event.value, event.key, msg.partition, msg.offset)
                    FETCH_WAIT.begin()
                    try:
                        # gates decode video and run FK: keep the event loop (heartbeats) free
                        outputs = await loop.run_in_executor(None, handle_observed, stage, record, catalogue, policy)
                        for out in outputs:
                            await out_topics[out.topic.name].send(key=out.key(), value=out.value())
                    except BaseException:
                        # not finished: the worker is stopping (SIGTERM cancels this agent while
                        # the stage runs) or the stage or a send failed. faust's stream acks the
                        # event it handed out however the body ends, and the consumer commits
                        # acked offsets as it stops: the event would be lost. A reference more
                        # keeps that ack from completing, so its offset (and the partition's
                        # after it) stays uncommitted and the event is processed again by the
                        # next worker to own the partition (every effect is idempotent)
                        msg.incref()
                        raise
                    finally:
                        FETCH_WAIT.end()
            agent.__name__ = stage.processor_id.replace("-", "_")
            return agent

        app.agent(channel, name=stage.processor_id)(make_agent())

    @app.page("/metrics")
    async def metrics(web, request):  # Prometheus scrapes each worker on its web port
        body, content_type = render_metrics()
        return web.bytes(body, content_type=content_type)

    return app
