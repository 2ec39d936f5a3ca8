"""The dataset builder's logic, apart from the broker: sources turn topic records into
episodes, ``DatasetBuilder`` selects them for one dataset by its spec, spools them, and
publishes a version when enough are pending or the oldest has waited long enough
(``builder`` cadence in ``kibotos/config/datasets.yaml``).

Sources are pluggable (``SOURCES``): ``verdicts`` (accepted final verdicts; a verdict
*revised* to rejected removes its episode from the next version; one revised to accepted
with another quality — S, reward, components — replaces it in the next version, changelog
op ``revised``) and ``xgen.clips`` (verified XGen clips), each used only when the
deployment's topic catalogue declares its topic. Redelivery is harmless: an episode
already in the dataset, or already pending, is skipped by submission id unless it is a
higher verdict revision with other quality (so a redelivered older verdict never undoes
a revision).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kibotos.datasets.episode import Episode, from_verdict, from_xgen_clip, is_retraction
from kibotos.datasets.store import DatasetStore


@dataclass(frozen=True)
class Source:
    topic_id: str
    episode: Callable[[dict], Episode | None]
    retraction: Callable[[dict], str | None]


SOURCES: dict[str, Source] = {
    "verdicts": Source("verdicts", from_verdict, lambda e: e["submission_id"] if is_retraction(e) else None),
    "xgen.clips": Source("xgen.clips", from_xgen_clip, lambda e: None),
}


def available_sources(topic_ids) -> dict[str, Source]:
    """The sources whose topic the catalogue declares."""
    ids = set(topic_ids)
    return {k: s for k, s in SOURCES.items() if s.topic_id in ids}


class DatasetBuilder:
    """Selection and publication for one dataset. Not thread-safe: one per consumer."""

    def __init__(self, store: DatasetStore, name: str, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.name = name
        self.spec = store.spec(name)
        self.clock = clock
        # submission id -> (verdict revision, quality) of what the dataset holds or will hold
        self.known: dict[str, tuple[int, tuple]] = {}
        latest = store.latest(name)
        for ep in store.episodes(name, latest) if latest else ():
            self._know(ep)
        pending = 0
        for ep in store.pending(name):
            self._know(ep)
            pending += 1
        revisions = store.pending_revisions(name)
        for ep in revisions.values():
            self._know(ep)
        self.removals = store.pending_removals(name)
        self.retracted = store.retracted_ids(name)
        self.pending = pending + len(revisions) + len(self.removals)
        self.oldest_pending_at: float | None = clock() if self.pending else None
        self.skipped: dict[str, int] = {}

    def _know(self, ep: Episode) -> None:
        cur = self.known.get(ep.submission_id)
        if cur is None or ep.verdict_revision >= cur[0]:
            self.known[ep.submission_id] = (ep.verdict_revision, ep.quality())

    def offer(self, topic_id: str, event: dict) -> str:
        """Take one record of ``topic_id``; returns what happened: ``added``,
        ``revised`` (a later verdict revision changed its quality), ``duplicate``,
        ``removed``, ``retracted`` (removed earlier: never again), ``not_an_episode`` or
        the spec's reason code."""
        source = SOURCES.get(topic_id)
        if source is None or topic_id not in self.spec.sources:
            return self._skip("source_not_selected")
        sid = source.retraction(event)
        if sid is not None:
            if sid in self.known and sid not in self.removals:
                self.store.add_removals(self.name, [sid])
                self.removals.add(sid)
                self._mark_pending()
                return "removed"
            return self._skip("not_an_episode")
        ep = source.episode(event)
        if ep is None:
            return self._skip("not_an_episode")
        if ep.submission_id in self.retracted or ep.submission_id in self.removals:
            return self._skip("retracted")
        cur = self.known.get(ep.submission_id)
        if cur is not None:
            if ep.verdict_revision <= cur[0] or ep.quality() == cur[1]:
                return self._skip("duplicate")  # redelivered, an older revision, or nothing changed
            if self.spec.reject_reason(ep):  # revised below the spec (e.g. S under min_score): it leaves
                self.store.add_removals(self.name, [ep.submission_id])
                self.removals.add(ep.submission_id)
                self._mark_pending()
                return "removed"
            self.store.add_revisions(self.name, [ep])
            self._know(ep)
            self._mark_pending()
            return "revised"
        reason = self.spec.reject_reason(ep)
        if reason:
            return self._skip(reason)
        self.store.add_pending(self.name, [ep], sync=False)
        self._know(ep)
        self._mark_pending()
        return "added"

    def _skip(self, reason: str) -> str:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return reason

    def _mark_pending(self) -> None:
        self.pending += 1
        if self.oldest_pending_at is None:
            self.oldest_pending_at = self.clock()

    def sync(self) -> None:
        """Make the spooled episodes durable (before their records' offsets are committed)."""
        self.store.sync_pending(self.name)

    def due(self) -> bool:
        cad = self.store.cfg.builder
        if not self.pending:
            return False
        return self.pending >= cad.publish_every_episodes or \
            self.clock() - (self.oldest_pending_at or self.clock()) >= cad.publish_every_s

    def publish(self, now_ms: int | None = None) -> dict | None:
        info = self.store.publish(self.name, now_ms)
        self.pending = 0
        self.oldest_pending_at = None
        for sid in self.removals:
            self.known.pop(sid, None)
        self.retracted |= self.removals
        self.removals = set()
        return info
