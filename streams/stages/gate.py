"""The gate stages: one per gate A–E, cheapest first (``processors.base.gates``)."""

from __future__ import annotations

from kibotos.config.gates import GateConfig
from kibotos.objectstore import ObjectStore
from processors.base import Gate, gates
from processors.chain import gate_on_path
from streams.in_flight import InFlight, advance, in_flight_outputs
from streams.stage import Output, Record, contained
from topics.catalogue import Catalogue


class GateStage:
    """Consume the previous gate's pass topic, run one gate, forward or reject. A gate
    that fails itself (``gate_internal_error``) raises a ``ValidatorFault``: retried, never
    a rejection (``streams.stage.handle_with_retries``)."""

    def __init__(self, gate: Gate, catalogue: Catalogue, store: ObjectStore, config: GateConfig):
        self.gate = gate
        self.id = self.processor_id = gate.gate_id
        self.catalogue = catalogue
        self.store = store
        self.config = config
        order = [g.letter for g in gates()]
        i = order.index(gate.letter)
        self.input = catalogue.submissions_received if i == 0 else catalogue.gate_passed(order[i - 1])
        self.inputs = (self.input,)
        self.passed = catalogue.gate_passed(gate.letter)
        self.outputs = (self.passed, catalogue.verification_rejected, catalogue.dead_letters)

    def handle(self, record: Record) -> list[Output]:
        return in_flight_outputs(self.input, record, self.catalogue, self.id, self._judge)

    def _judge(self, event: InFlight) -> list[Output]:
        res = contained(self.gate.gate_id,
                        lambda: gate_on_path(self.gate, self.store.local_path(event.bundle_uri), self.config),
                        internal_code="gate_internal_error", faults=True)
        changes: dict = {"config_version": self.config.config_version}
        if "claimed_offset_ms" in res.metrics:
            changes["sync"] = {k: res.metrics.get(k) for k in ("claimed_offset_ms", "estimated_offset_ms",
                                                                "sync_confidence")}
        if res.gate == "gate_a_integrity" and res.passed:
            model, _, revision = str(res.metrics.get("robot_model", "")).partition("@")
            changes["robot_model_id"], changes["robot_model_revision"] = model or event.robot_model_id, revision or None
        return advance(self.catalogue, event.replace(**changes), res, self.passed)
