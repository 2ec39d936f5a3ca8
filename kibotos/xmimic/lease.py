"""One trainer per run: a lease in the object store (README "XMimic through the stack").

Two ``training.requests`` records for one run id (a redelivery while the first job still
runs on another actor or consumer, a user sending it again) must never train twice into
the same checkpoint prefix. The run's trainer holds a lease: numbered objects
``<prefix>/lease/<generation>.json``, the highest generation is the holder. Taking the
run is a *conditional create* of the next generation (``create_bytes``: a hard link on the
local store, ``If-None-Match: *`` on S3), so of two contenders exactly one wins; nothing
is ever overwritten by a contender and no lease object is deleted (a deleted generation
could be created again by a late contender).

The holder renews its own object every ``ttl_s / 4`` (a ``beat`` counter, its last progress
record) from a thread, and checks before each renewal that no higher generation exists
(*fencing*: a holder that was taken for dead stops at its next renewal, checkpoint write
or iteration). A contender takes the run when the holder released it, when the holder's
object has not changed for ``ttl_s`` while the contender watched it (its own monotonic
clock: no clock agreement between nodes needed), or when the holder's wall-clock renewal
time is more than ``3 * ttl_s`` old (a long-dead holder is not waited for; tolerates up to
``2 * ttl_s`` of clock skew). A contender that watched a live holder for ``wait_s`` gives up
(``acquire`` returns False; ``holder`` is what it saw).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kibotos.errors import KibotosError, ServiceError

log = logging.getLogger("kibotos.xmimic")

_GEN = re.compile(r"/lease/(\d{10})\.json$")


class LeaseLost(KibotosError):
    """Another job took the run (this one was taken for dead): stop writing."""

    reason_code = "xmimic_run_taken_over"


class LeaseExpired(ServiceError):
    """This job could not renew its lease for ``ttl_s`` (the store is unreachable): others
    may take the run any moment, so it stops writing; a service fault (retried)."""

    reason_code = "service_unavailable"


@dataclass
class Holder:
    generation: int
    owner: str = ""
    beat: int = 0
    ttl_s: float = 0.0
    renewed_at: float = 0.0
    released: bool = False
    record: dict | None = None
    raw: bytes = field(default=b"", repr=False)


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RunLease:
    """The lease of one run under ``prefix`` (e.g. ``xmimic/<run_id>``).

    :param ttl_s: how long a holder's object may stay unchanged before contenders take
        the run (the holder renews every ``ttl_s / 4``).
    """

    def __init__(self, store, prefix: str, *, ttl_s: float = 60.0, owner: str | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.store, self.prefix, self.ttl_s = store, prefix.rstrip("/"), float(ttl_s)
        self.owner = owner or new_owner()
        self.clock, self.sleep = clock, sleep
        self.generation: int | None = None
        self.holder: Holder | None = None  # the live holder a failed acquire saw
        self.record: dict | None = None  # the holder's last progress record (renewals carry it)
        self._beat = 0
        self._lost = False
        self._last_ok = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------
    def _key(self, generation: int) -> str:
        return f"{self.prefix}/lease/{generation:010d}.json"

    def current(self) -> Holder | None:
        """The highest generation's object (None: nobody ever held the run)."""
        gens = [int(m.group(1)) for info in self.store.list(f"{self.prefix}/lease/")
                if (m := _GEN.search("/" + info.key))]
        if not gens:
            return None
        gen = max(gens)
        try:
            raw = self.store.read_bytes(self.store.uri_for(self._key(gen)), 1 << 20)
        except KibotosError as exc:
            if getattr(exc, "reason_code", "") == "service_unavailable":
                raise
            return Holder(gen)  # listed but unreadable: judged by watching like any other
        try:
            doc = json.loads(raw)
            return Holder(gen, str(doc.get("owner", "")), int(doc.get("beat", 0)), float(doc.get("ttl_s", 0)),
                          float(doc.get("renewed_at", 0)), bool(doc.get("released")), doc.get("record"), raw)
        except (ValueError, TypeError, AttributeError):
            return Holder(gen, raw=raw)

    def _doc(self, released: bool = False) -> bytes:
        return json.dumps({"owner": self.owner, "generation": self.generation, "beat": self._beat,
                           "ttl_s": self.ttl_s, "renewed_at": time.time(), "released": released,
                           "record": self.record}, sort_keys=True).encode()

    # --- taking the run -----------------------------------------------------------------
    def acquire(self, wait_s: float | None = None) -> bool:
        """Take the run (True), or give up after watching a live holder for ``wait_s``
        (False; default 1.25 × the holder's ``ttl_s``: long enough to see a dead one go stale)."""
        start = self.clock()
        poll = max(0.05, min(1.0, self.ttl_s / 8))
        watched: dict[tuple[int, bytes], float] = {}  # (generation, content) -> first seen at
        while True:
            cur = self.current()
            if cur is None:
                gen = 1
            else:
                ttl = cur.ttl_s if cur.ttl_s > 0 else self.ttl_s
                seen = watched.setdefault((cur.generation, cur.raw), self.clock())
                stale = self.clock() - seen >= ttl
                long_dead = cur.renewed_at > 0 and time.time() - cur.renewed_at > 3 * ttl
                if not (cur.released or stale or long_dead):
                    if self.clock() - start >= (wait_s if wait_s is not None else 1.25 * ttl):
                        self.holder = cur
                        return False
                    self.sleep(poll)
                    continue
                gen = cur.generation + 1
                if not cur.released:
                    log.warning("lease %s: holder %s (generation %d) is silent; taking the run", self.prefix,
                                cur.owner or "?", cur.generation)
            self.generation, self._beat = gen, 0
            if self.store.create_bytes(self._doc(), self._key(gen)) is not None:
                self._last_ok = self.clock()
                return True
            self.generation = None  # another contender created it first: look again

    # --- holding it ---------------------------------------------------------------------
    def start(self) -> None:
        """Renew every ``ttl_s / 4`` from a thread until ``release``."""
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.prefix}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.renew()
            except LeaseLost:
                return
            except Exception as exc:  # the store is down: retried; check() fails once ttl passes
                log.warning("lease %s: renewal failed: %s", self.prefix, exc)

    def renew(self) -> None:
        with self._lock:
            if self._lost:
                raise LeaseLost(f"run {self.prefix} was taken over")
            cur = self.current()
            if cur is None or cur.generation != self.generation:
                self._lost = True
                raise LeaseLost(f"run {self.prefix} was taken over by {cur.owner if cur else '?'} "
                                f"(generation {cur.generation if cur else '?'})")
            self._beat += 1
            self.store.put_bytes(self._doc(), self._key(self.generation))
            self._last_ok = self.clock()

    def check(self, strict: bool = False) -> None:
        """Raise ``LeaseLost`` when another job took the run (as the last renewal saw it;
        ``strict``: as the store says now, one listing) and ``LeaseExpired`` when this one
        could not renew for ``ttl_s`` (others may take it any moment)."""
        if self._lost:
            raise LeaseLost(f"run {self.prefix} was taken over")
        if strict:
            cur = self.current()
            if cur is None or cur.generation != self.generation:
                self._lost = True
                raise LeaseLost(f"run {self.prefix} was taken over by {cur.owner if cur else '?'}")
        if self.clock() - self._last_ok >= self.ttl_s:
            raise LeaseExpired(f"run {self.prefix}: lease not renewed for {self.ttl_s:.0f} s")

    def release(self) -> None:
        """Stop renewing and mark the object released (a waiting contender takes the run
        at once); nothing when the run was taken over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        if self.generation is None:
            return
        with self._lock:
            try:
                cur = self.current()
                if not self._lost and cur is not None and cur.generation == self.generation:
                    self.store.put_bytes(self._doc(released=True), self._key(self.generation))
            except Exception as exc:  # it expires by itself
                log.warning("lease %s: release failed: %s", self.prefix, exc)


class FencedStore:
    """The object store as a lease holder writes it: every write first checks the lease
    against the store (``RunLease.check(strict=True)``), so a job taken for dead stops before overwriting the new
    holder's checkpoints. Reads pass through."""

    def __init__(self, store, lease: RunLease):
        self._store, self._lease = store, lease

    def put_file(self, src, key: str):
        self._lease.check(strict=True)
        return self._store.put_file(src, key)

    def put_bytes(self, data: bytes, key: str):
        self._lease.check(strict=True)
        return self._store.put_bytes(data, key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
