"""The gate stages: one per gate A–E, cheapest first (``processors.base.gates``)."""

from __future__ import annotations

from kibotos.bundle.limits import Limits
from kibotos.config.gates import GateConfig
from kibotos.errors import BundleError
from kibotos.objectstore import ObjectStore
from kibotos.reports.model import GateResult
from processors.base import Gate, gates, run_gate
from streams.bundle_views import ViewCache
from streams.in_flight import InFlight, advance, in_flight_outputs
from streams.stage import Output, Record, contained
from topics.catalogue import Catalogue


class GateStage:
    """Consume the previous gate's pass topic, run one gate, forward or reject. A gate
    that fails itself (``gate_internal_error``) raises a ``ValidatorFault``: retried, never
    a rejection (``streams.stage.handle_with_retries``).

    ``views``: bundle views shared by the gate stages of one worker (``streams.bundle_views``):
    the next gate of a submission finds the view this one read, as in the in-process chain;
    None opens and closes a view per record."""

    def __init__(self, gate: Gate, catalogue: Catalogue, store: ObjectStore, config: GateConfig,
                 views: ViewCache | None = None):
        self.gate = gate
        self.id = self.processor_id = gate.gate_id
        self.catalogue = catalogue
        self.store = store
        self.config = config
        self.views = views if views is not None else ViewCache(max_views=0)
        self.limits = Limits.from_config(config)
        order = [g.letter for g in gates()]
        i = order.index(gate.letter)
        self.last = i == len(order) - 1  # no gate reads the bundle after this one
        self.input = catalogue.submissions_received if i == 0 else catalogue.gate_passed(order[i - 1])
        self.inputs = (self.input,)
        self.passed = catalogue.gate_passed(gate.letter)
        self.outputs = (self.passed, catalogue.verification_rejected, catalogue.dead_letters)

    def handle(self, record: Record) -> list[Output]:
        return in_flight_outputs(self.input, record, self.catalogue, self.id, self._judge)

    def _judge(self, event: InFlight) -> list[Output]:
        res = contained(self.gate.gate_id,
                        lambda: self._run(event), internal_code="gate_internal_error", faults=True)
        changes: dict = {"config_version": self.config.config_version}
        if "claimed_offset_ms" in res.metrics:
            changes["sync"] = {k: res.metrics.get(k) for k in ("claimed_offset_ms", "estimated_offset_ms",
                                                                "sync_confidence")}
        if res.gate == "gate_a_integrity" and res.passed:
            model, _, revision = str(res.metrics.get("robot_model", "")).partition("@")
            changes["robot_model_id"], changes["robot_model_revision"] = model or event.robot_model_id, revision or None
        return advance(self.catalogue, event.replace(**changes), res, self.passed)

    def _run(self, event: InFlight) -> GateResult:
        """Open the bundle (or take the view the previous gate left) and run the gate:
        ``processors.chain.gate_on_path`` with the view kept for the next gate."""
        path = self.store.local_path(event.bundle_uri)
        try:
            view, key = self.views.borrow(path, event.bundle_sha256, self.limits)
        except BundleError as exc:
            return GateResult(gate=self.gate.gate_id, passed=False, reason_code=exc.reason_code,
                              metrics={"error": str(exc)[:500], "wall_ms": 0.0})
        keep = False
        try:
            res = run_gate(self.gate, view, self.config)
            keep = res.passed and not self.last
            return res
        finally:
            self.views.give(view, key, keep)
