"""Token buckets: bursts, refill, per-miner isolation, global cap, bounded memory."""

from __future__ import annotations

from kibotos.ingest.ratelimit import RateLimiter, TokenBuckets


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refill_with_retry_after():
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a")
    assert 0.99 < wait <= 1.0  # one token per second
    clock.t += wait
    assert buckets.take("a") == 0.0
    clock.t += 100  # never more than the burst
    assert sum(buckets.take("a") == 0.0 for _ in range(10)) == 3


def test_one_miner_cannot_starve_others_or_the_global_bucket():
    clock = Clock()
    limiter = RateLimiter(per_minute=6, burst=2, global_per_minute=600, global_burst=5, clock=clock)
    results = [limiter.acquire("greedy") for _ in range(50)]
    assert sum(w == 0.0 for w, _ in results) == 2
    assert {scope for w, scope in results if w > 0} == {"miner"}
    # refused requests did not consume global tokens: three others still get through
    assert [limiter.acquire(m)[0] for m in ("a", "b", "c")] == [0.0, 0.0, 0.0]
    wait, scope = limiter.acquire("d")
    assert scope == "global" and wait > 0
    assert limiter.acquire("d")[1] == "global"  # its miner token was refunded, not lost


def test_memory_is_bounded_under_a_flood_of_identities():
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, burst=1, max_keys=100, clock=clock)
    for i in range(1000):
        buckets.take(f"sybil-{i}")
        clock.t += 2  # earlier buckets have refilled: forgettable
    assert len(buckets._buckets) <= 101
