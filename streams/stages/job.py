"""The evidence plan: the dispatch after gate E and one stage per evidence job kind
(run inside the GPU consumer's Ray actors, ``gpu_consumers.consumer``)."""

from __future__ import annotations

from kibotos.objectstore import ObjectStore
from kibotos.reports.model import GateResult
from processors.base import gates
from streams.in_flight import InFlight, advance, in_flight_outputs
from streams.stage import Output, Record, contained
from topics.catalogue import Catalogue, TopicSpec


def evidence_route(catalogue: Catalogue, evidence_jobs: tuple[str, ...]) -> dict[str, TopicSpec]:
    """Where each step of the evidence plan forwards: ``{"dispatch": jobs.<first>, <kind>:
    jobs.<next kind> | evidence.completed}``. Every process derives it from the same settings."""
    topics = [catalogue.job(kind) for kind in evidence_jobs] + [catalogue.evidence_completed]
    route = {"dispatch": topics[0]}
    for kind, nxt in zip(evidence_jobs, topics[1:]):
        route[kind] = nxt
    return route


class DispatchStage:
    """After gate E: send the submission to the first evidence job (or straight to
    ``evidence.completed`` when no evidence job is configured)."""

    id = processor_id = "evidence_dispatch"

    def __init__(self, catalogue: Catalogue, evidence_jobs: tuple[str, ...]):
        self.catalogue = catalogue
        self.input = catalogue.gate_passed(gates()[-1].letter)
        self.inputs = (self.input,)
        self.next = evidence_route(catalogue, evidence_jobs)["dispatch"]
        self.outputs = (self.next, catalogue.dead_letters)

    def handle(self, record: Record) -> list[Output]:
        return in_flight_outputs(self.input, record, self.catalogue, self.id,
                                 lambda event: [Output(self.next, event.to_record())])


class JobStage:
    """One evidence job (pose / IK / playback / align / task): ``handler(view, event) ->
    GateResult`` with ``event`` an ``InFlight``.

    Runs inside a GPU consumer's Ray actor, which keeps ``handler`` (and its model or
    scene) warm. A hard failure rejects, like a gate; anything else forwards. The job's own
    failure is a ``ValidatorFault``, never a rejection (``streams.stage``)."""

    def __init__(self, kind: str, handler, catalogue: Catalogue, store: ObjectStore,
                 evidence_jobs: tuple[str, ...], limits=None):
        self.kind = kind
        self.id = self.processor_id = f"job_{kind}"
        self.handler = handler
        self.catalogue = catalogue
        self.store = store
        self.limits = limits
        self.input = catalogue.job(kind)
        self.inputs = (self.input,)
        self.next = evidence_route(catalogue, evidence_jobs)[kind]
        self.outputs = (self.next, catalogue.verification_rejected, catalogue.dead_letters)

    def handle(self, record: Record) -> list[Output]:
        return in_flight_outputs(self.input, record, self.catalogue, self.id, self._run)

    def _run(self, event: InFlight) -> list[Output]:
        from kibotos.bundle import open_bundle

        def run() -> GateResult:
            with open_bundle(self.store.local_path(event.bundle_uri), self.limits) as view:
                return self.handler(view, event)

        # a model crash must not kill the consumer nor reject the miner: it is a
        # ValidatorFault (job_internal_error), raised like any ServiceError (renderer,
        # store) for the consumer to retry on a fresh actor and then dead-letter
        res = contained(self.id, run, internal_code="job_internal_error", faults=True)
        return advance(self.catalogue, event, res, self.next)
