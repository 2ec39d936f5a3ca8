"""The novelty stage: novelty and duplication against the ClickHouse index."""

from __future__ import annotations

from typing import Any

from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.objectstore import ObjectStore
from kibotos.reports.model import GateResult
from streams.in_flight import InFlight, advance, in_flight_outputs
from streams.stage import Output, Record, contained, now_ms
from topics.catalogue import Catalogue

GATE_ID = "novelty"
PLAYBACK_GATE = EVIDENCE_GATES["playback"]


def sim_render_hashes(event: InFlight) -> list[int]:
    """The pHashes of the playback job's simulation renders carried by ``event`` (design
    §8: simulation renders are fingerprinted too); empty when playback did not run or
    rendered nothing. A hash that does not parse is skipped: it is evidence, not input."""
    res = event.result(PLAYBACK_GATE)
    hashes = []
    for kf in (res.metrics.get("keyframes") or []) if res else []:
        try:
            hashes.append(int(str(kf["sim_phash"]), 16))
        except (KeyError, TypeError, ValueError):
            continue
    return hashes


def _epoch_ms(value: Any) -> int | None:
    """Epoch milliseconds of an Avro ``timestamp-millis`` field (a datetime once decoded)."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


class NoveltyStage:
    """Novelty and duplication against the ClickHouse index (``kibotos.novelty``):
    ``evidence.completed`` → ``novelty.completed``, or rejected for a same-miner duplicate.

    Runs where a ClickHouse client is (``streams.stage_consumer``): in the embedded stack,
    the process that owns chdb; in production any number of processes with the DSN."""

    id = processor_id = "novelty"

    def __init__(self, catalogue: Catalogue, store: ObjectStore, checker, limits=None):
        self.catalogue = catalogue
        self.store = store
        self.checker = checker
        self.limits = limits
        self.input = catalogue.evidence_completed
        self.inputs = (self.input,)
        self.next = catalogue.novelty_completed
        self.outputs = (self.next, catalogue.verification_rejected, catalogue.dead_letters)

    def handle(self, record: Record) -> list[Output]:
        return in_flight_outputs(self.input, record, self.catalogue, self.id,
                                 lambda event: self._check(event, record.value))

    def _check(self, event: InFlight, payload: bytes | None) -> list[Output]:
        from kibotos.bundle import open_bundle

        def run() -> GateResult:
            with open_bundle(self.store.local_path(event.bundle_uri), self.limits) as view:
                # the index is compared in the order of first checks (two racing copies
                # never both pass as new); between miners the upload time says which is
                # the original (kibotos.novelty.checker)
                return self.checker.check(view, event.submission_id, event.miner_id, now_ms(),
                                          received_at_ms=_epoch_ms(event.received_at), event_payload=payload,
                                          sim_hashes=sim_render_hashes(event))

        # the checker failing itself (a bug, the index unreadable) is a validator fault:
        # retried, then dead-lettered with the verdict pending (streams.stage)
        res = contained(GATE_ID, run, internal_code="novelty_internal_error", faults=True)
        outputs = advance(self.catalogue, event, res, self.next)
        return outputs + self._revise_later_copy(event, res)

    def _revise_later_copy(self, event: InFlight, res: GateResult) -> list[Output]:
        """This submission is the original of another miner's copy that was checked (and
        maybe paid) first: send the copy on again with its revised novelty result, so the
        decision publishes a ``revised`` verdict and a compensating ledger entry. The same
        outputs on a redelivery (the revision is stored once)."""
        later = res.metrics.get("cross_miner_later_match")
        revise = getattr(self.checker, "revise_later_copy", None)
        if not isinstance(later, dict) or revise is None or not float(later.get("match") or 0.0) > 0:
            return []
        revised = revise(event.submission_id, event.miner_id, later, now_ms())
        if revised is None:
            return []
        result, payload = revised
        # a stored event this code can no longer read becomes a dead letter
        return in_flight_outputs(self.input, Record(self.input.name, payload), self.catalogue, self.id,
                                 lambda copy_event: advance(self.catalogue, copy_event, result, self.next))
