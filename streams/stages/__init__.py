"""Stage logic of the stream application, free of any broker: ``handle(record) -> outputs``.

Every stage follows the stage contract of ``streams.stage`` (``id``, ``inputs``,
``outputs``, ``handle``) and works on the typed in-flight event (``streams.in_flight``).
One module per kind of stage:

- ``gate``: ``GateStage``, one per gate A–E, cheapest first;
- ``job``: ``DispatchStage`` and ``JobStage``, the evidence plan run by the GPU consumers;
- ``novelty``: ``NoveltyStage``, against the ClickHouse index;
- ``decision``: ``DecisionStage``, verdicts, scores and ledger entries.

The faust agents in ``streams.app`` only move bytes between topics around these calls,
so the whole chain can be exercised in-process (``run_in_process``) with exactly the
code the workers run. Undecodable input becomes a dead letter, never an exception.
"""

from __future__ import annotations

import logging
import time

from kibotos.config.gates import GateConfig
from kibotos.errors import KibotosError
from kibotos.objectstore import ObjectStore
from processors.base import gates
from streams.bundle_views import ViewCache
from streams.in_flight import InFlight, advance, in_flight_outputs  # noqa: F401  (re-exported)
from streams.stage import (  # noqa: F401  (re-exported)
    FaultPolicy,
    Output,
    Record,
    Stage,
    ValidatorFault,
    contained,
    dead_letter,
    handle_with_retries,
    now_ms,
)
from streams.stages.decision import LEDGER_NAMESPACE, DecisionStage, ledger_entry_id, verdict_event_id  # noqa: F401  (re-exported)
from streams.stages.gate import GateStage
from streams.stages.job import DispatchStage, JobStage, evidence_route  # noqa: F401  (re-exported)
from streams.stages.novelty import NoveltyStage  # noqa: F401  (re-exported)
from topics.catalogue import Catalogue, TopicSpec

log = logging.getLogger("kibotos.streams")


def handle_observed(stage, record: Record, catalogue: Catalogue, policy: FaultPolicy | None = None) -> list[Output]:
    """``stage.handle(record)`` with the record's submission id on every log line and its
    Prometheus accounting (records in/out, rejections by reason, dead letters, seconds);
    validator faults retried, then dead-lettered (``streams.stage.handle_with_retries``)."""
    from kibotos.runtime.logs import submission_context
    from kibotos.runtime.metrics import observe_stage

    with submission_context(record.key):
        t0 = time.perf_counter()
        outputs = handle_with_retries(stage, record, catalogue, policy)
        seconds = time.perf_counter() - t0
        try:
            topic_id = catalogue.by_name(record.topic).id
        except KibotosError:
            topic_id = record.topic
        observe_stage(stage.id, topic_id, outputs, seconds)
        log.info("handled", extra={"processor": stage.id, "topic": topic_id, "partition": record.partition,
                                   "offset": record.offset, "outputs": [o.topic.id for o in outputs],
                                   "ms": round(seconds * 1000.0, 3)})
    return outputs


def build_stages(catalogue: Catalogue, store: ObjectStore, config: GateConfig, scoring=None,
                 evidence_jobs: tuple[str, ...] = (), novelty: bool = False):
    """The broker-free stages of the gate workers, in order: one per gate, the evidence
    dispatch, the decision. The evidence jobs run in ``gpu_consumers``; the novelty stage
    (``NoveltyStage``, when ``novelty``) runs where a ClickHouse client is, and the
    decision then waits for its output."""
    views = ViewCache()  # one submission's gates share its bundle view, as in the chain
    stages: list[Stage] = [GateStage(g, catalogue, store, config, views) for g in gates()]
    stages.append(DispatchStage(catalogue, tuple(evidence_jobs)))
    accepted = catalogue.novelty_completed if novelty else catalogue.evidence_completed
    stages.append(DecisionStage(catalogue, scoring, accepted_input=accepted))
    return stages


def stage_inputs(stage) -> list[TopicSpec]:
    """The topics ``stage`` consumes (``Stage.inputs``; a bare ``input`` for old callers)."""
    inputs = getattr(stage, "inputs", None)
    return list(inputs) if inputs is not None else [stage.input]


def run_in_process(stages: list[Stage], first: list[Record], max_steps: int = 100_000,
                   policy: FaultPolicy | None = None) -> list[Output]:
    """Push records through the stages without a broker (tests, ``bench``): breadth-first,
    every output is routed to the stage(s) consuming its topic. Returns terminal outputs."""
    by_topic: dict[str, list] = {}
    for st in stages:
        for spec in stage_inputs(st):
            by_topic.setdefault(spec.name, []).append(st)
    queue, terminal = list(first), []
    steps = 0
    while queue and steps < max_steps:
        rec = queue.pop(0)
        steps += 1
        for st in by_topic.get(rec.topic, []):
            # as the workers do: validator faults retried, then dead-lettered
            catalogue = getattr(st, "catalogue", None)
            outs = handle_with_retries(st, rec, catalogue, policy) if catalogue is not None else st.handle(rec)
            for out in outs:
                nxt = Record(out.topic.name, out.value(), out.key())
                if out.topic.name in by_topic:
                    queue.append(nxt)
                else:
                    terminal.append(out)
    return terminal
