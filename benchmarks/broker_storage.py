"""Tansu storage engines compared: produce and consume throughput of ``memory://``,
``s3://`` on SeaweedFS and ``postgres://`` on a local PostgreSQL, and the start-up cost.

``python -m benchmarks.broker_storage [--records N] [--size BYTES] [--engines memory,s3,postgres]``

Produce: one producer, ``acks=all``, records of ``size`` bytes to a 4-partition topic,
flushed; consume: one consumer reads them all back from the earliest offset. The
PostgreSQL run needs the Debian ``postgresql`` binaries and a non-root ``postgres`` user
(initdb refuses root); it is skipped with a reason when they are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from infra.embedded_broker import EmbeddedBroker
from infra.tansu import TansuBroker, free_loopback_port


def measure(bootstrap: str, records: int, size: int) -> dict:
    topic = f"bench-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        fut.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    payload = os.urandom(size)
    t0 = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=payload)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(300)
    produce_s = time.perf_counter() - t0
    # one record at a time, acknowledged before the next (how the stage consumers produce)
    latencies = []
    for _ in range(min(records, 300)):
        t1 = time.perf_counter()
        producer.produce(topic, key=b"one", value=payload)
        producer.flush(30)
        latencies.append(time.perf_counter() - t1)
    latencies.sort()
    produced = records
    records += min(records, 300)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    consumer.subscribe([topic])
    seen, t0, first = 0, time.perf_counter(), None
    deadline = time.monotonic() + 300
    while seen < records and time.monotonic() < deadline:
        batch = [m for m in consumer.consume(1000, 1.0) if not m.error()]
        if batch and first is None:
            first = time.perf_counter()
        seen += len(batch)
    consume_s = time.perf_counter() - (first or t0)
    consumer.close()
    return {"records": records, "size": size, "consumed": seen,
            "produce_msg_s": round(produced / produce_s), "consume_msg_s": round(seen / consume_s) if seen else 0,
            "produce_mb_s": round(produced * size / produce_s / 1e6, 2),
            "acked_one_p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2),
            "acked_one_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1e3, 2)}


def run_memory(records, size):
    t0 = time.perf_counter()
    with TansuBroker() as broker:
        started = time.perf_counter() - t0
        return {"engine": "memory://", "startup_s": round(started, 2), **measure(broker.bootstrap, records, size)}


def run_s3(records, size):
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        t0 = time.perf_counter()
        with EmbeddedBroker(Path(tmp)) as broker:
            started = time.perf_counter() - t0
            return {"engine": "s3:// (SeaweedFS)", "startup_s": round(started, 2),
                    **measure(broker.bootstrap, records, size)}


def run_postgres(records, size):
    binaries = Path("/usr/lib/postgresql")
    versions = sorted(binaries.glob("*/bin/initdb")) if binaries.is_dir() else []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        user = None
    if not versions or user is None:
        return {"engine": "postgres://", "skipped": "no Debian postgresql binaries or postgres user"}
    bindir = versions[-1].parent
    tmp = tempfile.mkdtemp(prefix="bench-pg-")
    os.chown(tmp, user.pw_uid, user.pw_gid)
    port = free_loopback_port()

    def as_pg(*argv, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, **kw)

    t0 = time.perf_counter()
    try:
        as_pg(str(bindir / "initdb"), "-D", f"{tmp}/data", "-U", "postgres", "--auth=trust")
        as_pg(str(bindir / "pg_ctl"), "-D", f"{tmp}/data", "-l", f"{tmp}/log", "-w", "-o",
              f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start")
        with TansuBroker(storage_engine=f"postgres://postgres:postgres@127.0.0.1:{port}/postgres",
                         startup_timeout=60) as broker:
            started = time.perf_counter() - t0
            return {"engine": "postgres://", "startup_s": round(started, 2), **measure(broker.bootstrap, records, size)}
    except Exception as exc:  # the engine did not come up: say why, keep the other figures
        return {"engine": "postgres://", "skipped": f"{type(exc).__name__}: {str(exc)[:300]}"}
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "pg_ctl"), "-D", f"{tmp}/data", "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


ENGINES = {"memory": run_memory, "s3": run_s3, "postgres": run_postgres}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--engines", default="memory,s3,postgres")
    args = parser.parse_args(argv)
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "results": []}
    for name in args.engines.split(","):
        result = ENGINES[name](args.records, args.size)
        print(json.dumps(result), flush=True)
        out["results"].append(result)
    return out


if __name__ == "__main__":
    main()
