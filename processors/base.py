"""The gate contract and the gate registry.

A gate is a pure function ``check(view, config) -> GateResult`` registered under a
stable id with its position in the cheapest-first order. Stream adapters and
``kibotos verify`` both run gates through ``run_gate``, which turns any error raised by
hostile input into a failed result with a reason code (``streams.stage.contained``, the
one error wrapper of every stage) — a gate never crashes a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kibotos.bundle.limits import Limits, gate_deadline
from kibotos.bundle.reader import BundleView
from kibotos.config.gates import GateConfig
from kibotos.errors import KibotosError
from kibotos.reports.model import GateResult
from streams.stage import contained

CheckFn = Callable[[BundleView, GateConfig], GateResult]


@dataclass(frozen=True)
class Gate:
    gate_id: str  # stable id, e.g. "gate_a_integrity" — what operators see
    letter: str  # "a".."e": names the pass topic
    order: int
    title: str
    check: CheckFn


_GATES: dict[str, Gate] = {}


def register_gate(gate_id: str, letter: str, order: int, title: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        if gate_id in _GATES:
            raise ValueError(f"gate {gate_id} registered twice")
        _GATES[gate_id] = Gate(gate_id, letter, order, title, fn)
        return fn

    return deco


def gates() -> list[Gate]:
    """Every registered gate, cheapest first (``processors.gates.GATE_ORDER``)."""
    from processors.gates import GATE_ORDER  # importing it registers the gates

    if set(GATE_ORDER) != set(_GATES):
        raise ValueError(f"GATE_ORDER {GATE_ORDER} does not name the registered gates {sorted(_GATES)}")
    return [_GATES[gate_id] for gate_id in GATE_ORDER]


def get_gate(gate_id: str) -> Gate:
    known = {g.gate_id: g for g in gates()}
    if gate_id not in known:
        raise KibotosError(f"unknown gate {gate_id!r}; known: {', '.join(known)}", reason_code="unknown_gate")
    return known[gate_id]


def result(gate: str, passed: bool, metrics: dict, thresholds: dict, reason: str | None = None,
           flags: list[str] | None = None) -> GateResult:
    return GateResult(gate=gate, passed=passed, metrics=metrics, thresholds=thresholds,
                      reason_code=None if passed else reason, flags=flags or [])


def run_gate(gate: Gate, view: BundleView, config: GateConfig) -> GateResult:
    """Run one gate within its time budget; errors become a failed result with a reason
    code (``gate_internal_error`` for a bug), and the wall time is recorded
    (``streams.stage.contained``)."""
    # the limits the view was opened with (the config's, unless a caller chose others)
    limits = getattr(view, "limits", None) or Limits.from_config(config)

    def check() -> GateResult:
        with gate_deadline(limits.gate_time_budget_s, limits):
            return gate.check(view, config)

    return contained(gate.gate_id, check, internal_code="gate_internal_error")
