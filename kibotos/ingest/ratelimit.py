"""Per-miner and global token buckets for the ingest API.

Each miner has a bucket of ``burst`` tokens refilled at ``per_minute``; every upload
request takes one. A request the miner's bucket refuses costs the global bucket
nothing, so one miner hammering the API cannot starve the others. State is in memory,
per ingest process: with several replicas, route miners consistently (or divide the
limits by the replica count).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets keyed by a string. ``take(key)`` returns 0.0 when allowed, else the
    seconds until a token is available (the Retry-After)."""

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def _refill(self, bucket: _Bucket, now: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now

    def take(self, key: str) -> float:
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            self._refill(bucket, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def refund(self, key: str) -> None:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    def _forget_full(self, now: float) -> None:
        # a full bucket is the same as no bucket: dropping those bounds memory under a
        # flood of fresh identities without forgetting anyone's debt
        for key in [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]:
            del self._buckets[key]


class RateLimiter:
    """A per-miner limit in front of a global one."""

    def __init__(self, per_minute: float, burst: int, global_per_minute: float, global_burst: int,
                 clock: Callable[[], float] = time.monotonic):
        self.miners = TokenBuckets(per_minute, burst, clock=clock)
        self.overall = TokenBuckets(global_per_minute, global_burst, clock=clock)

    def acquire(self, miner_id: str) -> tuple[float, str]:
        """``(0.0, "")`` when allowed, else ``(retry_after_s, scope)`` with scope
        ``"miner"`` or ``"global"``."""
        wait = self.miners.take(miner_id)
        if wait > 0:
            return wait, "miner"
        wait = self.overall.take("*")
        if wait > 0:
            self.miners.refund(miner_id)
            return wait, "global"
        return 0.0, ""
