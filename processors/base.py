"""The gate contract and the gate registry.

A gate is a pure function ``check(view, config) -> GateResult`` registered under a
stable id with its position in the cheapest-first order. Stream adapters and
``kibotos verify`` both run gates through ``run_gate``, which turns any error raised by
hostile input into a failed result with a reason code — a gate never crashes a worker.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable

from kibotos.bundle.limits import RESOURCE_LIMIT, Limits, gate_deadline
from kibotos.bundle.reader import BundleView
from kibotos.errors import KibotosError
from kibotos.gate_config import GateConfig
from kibotos.report import GateResult

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
    """Every registered gate, cheapest first."""
    import processors.gates  # noqa: F401  (registers the gates)

    return sorted(_GATES.values(), key=lambda g: g.order)


def get_gate(gate_id: str) -> Gate:
    known = {g.gate_id: g for g in gates()}
    if gate_id not in known:
        raise KibotosError(f"unknown gate {gate_id!r}; known: {', '.join(known)}", reason_code="unknown_gate")
    return known[gate_id]


def result(gate: str, passed: bool, metrics: dict, thresholds: dict, reason: str | None = None,
           flags: list[str] | None = None) -> GateResult:
    return GateResult(gate=gate, passed=passed, metrics=metrics, thresholds=thresholds,
                      reason_code=None if passed else reason, flags=flags or [])


def _limit_metrics(exc: Exception) -> dict:
    """What a resource error says about the limit it hit (``limit``, ``limit_value``, ...)."""
    found = getattr(exc, "metrics", None)
    return {k: v for k, v in found.items() if isinstance(v, (str, int, float, bool)) or v is None} \
        if isinstance(found, dict) else {}


def run_gate(gate: Gate, view: BundleView, config: GateConfig) -> GateResult:
    """Run one gate; errors become a failed result with a reason code and wall time."""
    t0 = time.perf_counter()
    # the limits the view was opened with (the config's, unless a caller chose others)
    limits = getattr(view, "limits", None) or Limits.from_config(config)
    try:
        with gate_deadline(limits.gate_time_budget_s, limits):
            res = gate.check(view, config)
    except KibotosError as exc:
        res = GateResult(gate=gate.gate_id, passed=False, reason_code=exc.reason_code,
                         metrics={"error": str(exc)[:500], **_limit_metrics(exc)})
    except MemoryError:
        # the worker's memory ceiling (RLIMIT_AS, streams.worker) refused an allocation:
        # what the gate held is garbage now, the worker goes on
        res = GateResult(gate=gate.gate_id, passed=False, reason_code=RESOURCE_LIMIT,
                         metrics={"limit": "worker_memory_bytes", "error": "memory ceiling reached"})
    except Exception as exc:  # a bug or an input we did not foresee: never crash the worker
        res = GateResult(gate=gate.gate_id, passed=False, reason_code="gate_internal_error",
                         metrics={"error": f"{type(exc).__name__}: {exc}"[:500],
                                  "trace": traceback.format_exc(limit=3)[-800:]})
    metrics = dict(res.metrics)
    metrics["wall_ms"] = round((time.perf_counter() - t0) * 1000.0, 3)
    return res.model_copy(update={"metrics": metrics})
