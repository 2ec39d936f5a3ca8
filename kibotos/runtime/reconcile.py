"""Reconciliation: every submission accepted at ingest reaches a final verdict.

The warehouse is the outbox. A submission is *owed a verdict* once ingest issued its
receipt (``ingest_receipts`` with status ``accepted``) or once the sink recorded its
``submissions.received`` event (the operator's ``kibotos submit`` path); it is *done*
once ``verification_reports`` holds its report. A submission owed a verdict for longer
than ``stuck_after_s`` (counted from its ``received_at``) is *stuck*: whatever held it —
a broker that lost its log, a stage that dropped it, a crash between two commits — the
reconciler emits its ``submissions.received`` event again, rebuilt from the warehouse
row, and the chain runs it from gate A.

Why that is safe: every effect downstream is idempotent by ``submission_id``
(replacing tables for reports and gate results, the novelty result stored per
submission, the ledger entry id derived from the submission), so a submission that was
merely slow and is emitted again still gets one report and is paid once. A bundle that
has vanished from the object store is rejected by gate A (``bundle_unreadable``): that is
still its one final verdict.

A submission is emitted again at most ``max_attempts`` times, and not again before
another ``stuck_after_s`` has passed. The counts live in the warehouse
(``reconcile_attempts``, migration 0008), not in this process: a reconciler started
afresh (a restarted ``kibotos up``, an operator's ``kibotos admin reconcile``) goes on
counting where the last one stopped, so nothing is re-driven forever. A submission over
the limit is *given up*, never dropped silently: its rebuilt ``submissions.received``
record goes to ``dead.letters`` once (error code ``reconcile_attempts_exhausted``,
processor ``reconciler``, the payload verbatim so that it can be replayed), its row says
``given_up`` with the reason, and every pass lists it under ``given_up`` until it has a
verdict or an operator resets it (``kibotos admin reconcile --retry SID``: a new round of
``max_attempts``).

The object store is the outbox of the operator's path (``kibotos submit`` stores
``bundles/<submission_id>.zarr.zip`` first, then emits the event; it issues no receipt):
a bundle stored there longer than ``stuck_after_s`` ago that neither the warehouse's
tables nor a report know of had its event lost, and it is emitted again, rebuilt from the
object and its manifest. (Ingest's uploads, ``bundles/<sid>/<upload_id>.zarr.zip``, are
owed a verdict only once their receipt exists: those come from the receipts.)

Run it by hand: ``kibotos admin reconcile`` (asks the running embedded stack, or works
directly against a production ClickHouse and Kafka); ``kibotos up`` runs it every
``--reconcile-every`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from kibotos.errors import ServiceError
from topics.catalogue import Catalogue

log = logging.getLogger(__name__)

RECONCILED = Counter("kibotos_reconciled", "stuck submissions emitted again by the reconciler", ["outcome"])

DB = "kibotos"

# One row per submission owed a verdict and without a report: from accepted receipts
# (ingest) and from recorded submissions.received events (operator path). Receipts win
# for their fields: they are written before the sink has seen anything.
STUCK_SQL = f"""
WITH owed AS (
    SELECT submission_id, miner_id, bundle_uri, bundle_sha256, bundle_size_bytes,
           toUnixTimestamp64Milli(received_at) AS received_ms, manifest_json, 1 AS from_receipt
    FROM {DB}.ingest_receipts FINAL WHERE status = 'accepted'
    UNION ALL
    SELECT submission_id, miner_id, bundle_uri, bundle_sha256, bundle_size_bytes,
           toUnixTimestamp64Milli(received_at) AS received_ms,
           toJSONString(map('robot_model_id', ifNull(robot_model_id, ''), 'task_id', ifNull(task_id, ''))),
           0 AS from_receipt
    FROM {DB}.submissions FINAL
)
SELECT submission_id,
       argMax(miner_id, from_receipt), argMax(bundle_uri, from_receipt), argMax(bundle_sha256, from_receipt),
       argMax(bundle_size_bytes, from_receipt), min(received_ms), argMax(manifest_json, from_receipt)
FROM owed
WHERE submission_id NOT IN (SELECT submission_id FROM {DB}.verification_reports)
  -- given up: an operator's case now (listed by GIVEN_UP_SQL), never crowding out new ones
  AND submission_id NOT IN (SELECT submission_id FROM {DB}.reconcile_attempts FINAL WHERE state = 'given_up')
GROUP BY submission_id
HAVING min(received_ms) <= {{before:Int64}}
ORDER BY min(received_ms)
LIMIT {{limit:UInt32}}
"""

OWED_SQL = f"""
SELECT count() FROM (
    SELECT submission_id FROM {DB}.ingest_receipts FINAL WHERE status = 'accepted'
    UNION DISTINCT SELECT submission_id FROM {DB}.submissions FINAL
) WHERE submission_id NOT IN (SELECT submission_id FROM {DB}.verification_reports)
  AND submission_id NOT IN (SELECT submission_id FROM {DB}.reconcile_attempts FINAL WHERE state = 'given_up')
"""


# the latest state of each submission the reconciler has emitted again (migration 0008)
ATTEMPTS_SQL = f"""
SELECT submission_id, revision, attempts, toUnixTimestamp64Milli(last_emitted_at), state
FROM {DB}.reconcile_attempts FINAL WHERE submission_id IN {{sids:Array(String)}}
"""
# given up and still without a verdict: what an operator has to look at
GIVEN_UP_SQL = f"""
SELECT submission_id FROM {DB}.reconcile_attempts FINAL
WHERE state = 'given_up' AND submission_id NOT IN (SELECT submission_id FROM {DB}.verification_reports)
ORDER BY updated_at LIMIT {{limit:UInt32}}
"""
ATTEMPT_COLUMNS = ["submission_id", "revision", "attempts", "last_emitted_at", "state", "reason"]
GIVEN_UP = "reconcile_attempts_exhausted"


@dataclass
class Attempts:
    """What the warehouse knows of one submission's re-emissions."""

    revision: int = 0
    attempts: int = 0
    last_emitted_ms: int | None = None
    state: str = ""


@dataclass
class ReconcileResult:
    checked_at_ms: int
    pending: int = 0  # owed a verdict, not yet stuck (given up ones apart)
    reemitted: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # emitted again recently: give it time
    given_up: list[str] = field(default_factory=list)  # over the attempt limit: an operator's case
    dead_lettered: list[str] = field(default_factory=list)  # given up by this pass (sent to dead.letters)

    def as_dict(self) -> dict[str, Any]:
        return {"checked_at_ms": self.checked_at_ms, "pending": self.pending, "reemitted": self.reemitted,
                "waiting": self.waiting, "given_up": self.given_up, "dead_lettered": self.dead_lettered}


def _manifest_field(manifest_json: str, *path: str) -> str | None:
    try:
        value: Any = json.loads(manifest_json or "null")
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
    except ValueError:
        return None
    return value if isinstance(value, str) and value else None


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def received_event(row: tuple) -> dict[str, Any]:
    """The ``submissions.received`` record of one ``STUCK_SQL`` row."""
    sid, miner, uri, sha, size, received_ms, manifest_json = row
    robot = _manifest_field(manifest_json, "robot_model_id") or _manifest_field(manifest_json, "robot", "model_id")
    task = _manifest_field(manifest_json, "task_id") or _manifest_field(manifest_json, "task", "task_id")
    return {"schema_version": 1, "submission_id": sid, "miner_id": miner, "bundle_uri": uri, "bundle_sha256": sha,
            "bundle_size_bytes": int(size), "received_at": int(received_ms), "robot_model_id": robot,
            "task_id": task}


class Reconciler:
    """:param client: clickhouse-connect client on the warehouse (the stack's own, locked).
    :param producer: a confluent-kafka ``Producer`` on the pipeline's broker.
    :param stuck_after_s: a submission without a report this long after ``received_at``
        is emitted again.
    """

    def __init__(self, client, producer, catalogue: Catalogue, *, stuck_after_s: float = 900.0,
                 max_attempts: int = 3, batch: int = 1000, store=None):
        self.client = client
        self.store = store  # the object store, for the operator path's outbox (None: not scanned)
        self.producer = producer
        self.catalogue = catalogue
        self.stuck_after_s = stuck_after_s
        self.max_attempts = max_attempts
        self.batch = batch
        self._lock = threading.Lock()  # one pass at a time (periodic thread and by hand)

    def run_once(self, now_ms: int | None = None) -> ReconcileResult:
        with self._lock:
            return self._run(int(time.time() * 1000) if now_ms is None else now_ms)

    def _run(self, now_ms: int) -> ReconcileResult:
        result = ReconcileResult(checked_at_ms=now_ms)
        before = now_ms - int(self.stuck_after_s * 1000)
        try:
            owed = int(self.client.query(OWED_SQL).result_rows[0][0])
            rows = self.client.query(STUCK_SQL, parameters={"before": before, "limit": self.batch}).result_rows
            result.given_up = [r[0] for r in self.client.query(GIVEN_UP_SQL, parameters={"limit": self.batch}).result_rows]
        except Exception as exc:
            raise ServiceError(f"reconcile: cannot read the warehouse: {exc}") from exc
        result.pending = max(0, owed - len(rows))
        events = [(row[0], lambda row=row: received_event(row)) for row in rows]
        if self.store is not None:
            events += self._orphan_bundles(before)
        known = self.attempts([sid for sid, _ in events])
        due: list[tuple[str, dict[str, Any], Attempts]] = []
        dead: list[tuple[str, dict[str, Any], Attempts]] = []
        for sid, build in events:
            seen = known.get(sid, Attempts())
            if seen.state == "given_up":  # an orphan bundle given up (the tables do not know it)
                if sid not in result.given_up:
                    result.given_up.append(sid)
                continue
            # the last emission gets its bound too, before the next one or giving up
            if seen.last_emitted_ms is not None and now_ms - seen.last_emitted_ms < self.stuck_after_s * 1000:
                result.waiting.append(sid)
                continue
            try:
                event = build()
            except Exception as exc:  # an object that vanished or cannot be read: next pass
                log.warning("reconcile: cannot rebuild the event of %s: %s", sid, exc)
                continue
            (due if seen.attempts < self.max_attempts else dead).append((sid, event, seen))
        spec, dead_spec = self.catalogue.submissions_received, self.catalogue.dead_letters
        outgoing = [(spec, event) for _, event, _ in due]
        outgoing += [(dead_spec, self._dead_letter(sid, event, seen, now_ms)) for sid, event, seen in dead]
        errors: list[object] = []

        def delivered(err: object, msg: object) -> None:
            if err:
                errors.append(err)

        for topic, record in outgoing:
            try:
                self.producer.produce(topic.name, key=topic.key(record), value=topic.serialize(record),
                                      on_delivery=delivered)
            except Exception as exc:  # BufferError, KafkaException: the next pass tries again
                errors.append(exc)
        if outgoing and (self.producer.flush(30) or errors):
            raise ServiceError(f"reconcile: {len(errors) or 'some'} re-emissions not acknowledged: "
                               f"{errors[:1]}")
        # counted only once the broker has them: a pass that failed above emits them again
        rows_out = [[sid, seen.revision + 1, seen.attempts + 1, _utc(now_ms), "emitted", ""]
                    for sid, _, seen in due]
        rows_out += [[sid, seen.revision + 1, seen.attempts, _utc(seen.last_emitted_ms or now_ms), "given_up",
                      self._give_up_reason(seen)] for sid, _, seen in dead]
        if rows_out:
            try:
                self.client.insert(f"{DB}.reconcile_attempts", rows_out, column_names=ATTEMPT_COLUMNS)
            except Exception as exc:
                raise ServiceError(f"reconcile: cannot record the attempts: {exc}") from exc
        result.reemitted = [sid for sid, _, _ in due]
        result.dead_lettered = [sid for sid, _, _ in dead]
        result.given_up += result.dead_lettered
        RECONCILED.labels("reemitted").inc(len(result.reemitted))
        RECONCILED.labels("given_up").inc(len(result.dead_lettered))
        if result.reemitted or result.dead_lettered:
            log.warning("reconcile: emitted %d stuck submission(s) again, gave up on %d (dead-lettered)",
                        len(result.reemitted), len(result.dead_lettered),
                        extra={"reemitted": result.reemitted[:20], "given_up": result.dead_lettered[:20]})
        return result

    def attempts(self, sids: list[str]) -> dict[str, Attempts]:
        """The recorded re-emissions of ``sids`` (absent: never emitted again)."""
        if not sids:
            return {}
        try:
            rows = self.client.query(ATTEMPTS_SQL, parameters={"sids": list(sids)}).result_rows
        except Exception as exc:
            raise ServiceError(f"reconcile: cannot read the attempts: {exc}") from exc
        return {sid: Attempts(int(rev), int(n), int(last) if n else None, state) for sid, rev, n, last, state in rows}

    def reset(self, sids: list[str], now_ms: int | None = None) -> list[str]:
        """An operator's retry: the given submissions (still owed a verdict) get another
        round of ``max_attempts`` re-emissions, starting with the next pass."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            known = self.attempts(sids)
            rows = [[sid, known[sid].revision + 1, 0, _utc(now_ms), "reset", "operator retry"]
                    for sid in sids if sid in known]
            if rows:
                try:
                    self.client.insert(f"{DB}.reconcile_attempts", rows, column_names=ATTEMPT_COLUMNS)
                except Exception as exc:
                    raise ServiceError(f"reconcile: cannot record the reset: {exc}") from exc
            return [sid for sid in sids if sid in known]

    def _give_up_reason(self, seen: Attempts) -> str:
        return (f"emitted again {seen.attempts} time(s), {self.stuck_after_s:.0f} s apart, without a final verdict; "
                "find why in its stage logs and dead.letters, then `kibotos admin reconcile --retry <submission_id>`")

    def _dead_letter(self, sid: str, event: dict[str, Any], seen: Attempts, now_ms: int) -> dict[str, Any]:
        """The ``dead.letters`` record of a submission given up: its rebuilt
        ``submissions.received`` event verbatim (replayable). It came from no broker
        record: partition -1 and an offset derived from the submission id, so the
        warehouse keeps one row per submission however often it is sent."""
        spec = self.catalogue.submissions_received
        digest = hashlib.sha256(sid.encode()).digest()
        return {"source_topic": spec.name, "source_partition": -1,
                "source_offset": int.from_bytes(digest[:7], "big"), "key": sid.encode(),
                "payload": spec.serialize(event), "error_code": GIVEN_UP,
                "error_message": self._give_up_reason(seen), "processor_id": "reconciler", "failed_at": now_ms}

    def _orphan_bundles(self, before_ms: int) -> list[tuple[str, Any]]:
        """Operator-path bundles stored before ``before_ms`` that no table knows of."""
        found: dict[str, Any] = {}
        for info in self.store.list("bundles/"):
            name = info.key[len("bundles/"):]
            if "/" in name or not name.endswith(".zarr.zip") or info.modified_at * 1000 > before_ms:
                continue
            found[name[: -len(".zarr.zip")]] = info
            if len(found) >= self.batch:
                break
        if not found:
            return []
        try:
            known = {r[0] for r in self.client.query(
                f"""SELECT submission_id FROM {DB}.submissions WHERE submission_id IN {{sids:Array(String)}}
                UNION DISTINCT SELECT submission_id FROM {DB}.ingest_receipts WHERE submission_id IN {{sids:Array(String)}}
                UNION DISTINCT SELECT submission_id FROM {DB}.verification_reports
                WHERE submission_id IN {{sids:Array(String)}}""", parameters={"sids": list(found)}).result_rows}
        except Exception as exc:
            raise ServiceError(f"reconcile: cannot read the warehouse: {exc}") from exc
        return [(sid, lambda sid=sid, info=info: self._bundle_event(sid, info))
                for sid, info in found.items() if sid not in known]

    def _bundle_event(self, sid: str, info) -> dict[str, Any]:
        from kibotos.objectstore import sha256_file
        from kibotos.runtime.submit import _identify

        with self.store.open_local(info.key, info.size_bytes) as path:
            _, miner, robot, _ = _identify(path, "anonymous")
            sha = sha256_file(path)
        return {"schema_version": 1, "submission_id": sid, "miner_id": miner, "bundle_uri": self.store.uri_for(info.key),
                "bundle_sha256": sha, "bundle_size_bytes": int(info.size_bytes),
                "received_at": int(info.modified_at * 1000), "robot_model_id": robot, "task_id": None}

    def run(self, stop: threading.Event, every_s: float, on_result=None) -> None:
        """Reconcile every ``every_s`` seconds until ``stop`` is set (the stack's thread)."""
        while not stop.wait(every_s):
            try:
                result = self.run_once()
                if on_result is not None:
                    on_result(result)
            except ServiceError:
                log.exception("reconcile pass failed; next pass in %.0fs", every_s)
