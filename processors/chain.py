"""The gate chain, cheapest first: the same code for ``kibotos verify`` and the streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kibotos.bundle.reader import BundleView, Limits, open_bundle
from kibotos.config.gates import GateConfig
from kibotos.errors import BundleError
from kibotos.reports.model import GateResult, SyncInfo, VerificationReport
from processors.base import Gate, gates, run_gate

# reason codes raised while opening an archive: the input is unreadable as a bundle
UNREADABLE_REASONS = frozenset({
    "bundle_not_found", "bundle_unreadable", "bundle_too_many_entries", "bundle_unsafe_path",
    "bundle_too_large", "bundle_zip_bomb", "bundle_metadata_too_large", "bundle_duplicate_entries",
    "manifest_missing",
})


def gate_on_path(gate: Gate, path: str | Path, config: GateConfig, limits: Limits | None = None) -> GateResult:
    """Open the bundle and run one gate: what a stream processor does per record."""
    try:
        view = open_bundle(path, limits or Limits.from_config(config))
    except BundleError as exc:
        return GateResult(gate=gate.gate_id, passed=False, reason_code=exc.reason_code,
                          metrics={"error": str(exc)[:500], "wall_ms": 0.0})
    with view:
        return run_gate(gate, view, config)


def run_chain(view: BundleView, config: GateConfig) -> list[GateResult]:
    """Every gate in order until the first failure (later gates never run)."""
    results = []
    for gate in gates():
        res = run_gate(gate, view, config)
        results.append(res)
        if not res.passed:
            break
    return results


def sync_from_results(results: list[GateResult]) -> SyncInfo:
    for res in results:
        if "claimed_offset_ms" in res.metrics:
            return SyncInfo(
                claimed_offset_ms=res.metrics.get("claimed_offset_ms"),
                estimated_offset_ms=res.metrics.get("estimated_offset_ms"),
                sync_confidence=res.metrics.get("sync_confidence"),
            )
    return SyncInfo()


def build_report(
    submission_id: str,
    results: list[GateResult],
    config_version: str,
    *,
    miner_id: str | None = None,
    robot_model_id: str | None = None,
    robot_model_revision: str | None = None,
    points: float = 0.0,
    scores: dict[str, Any] | None = None,
) -> VerificationReport:
    failed = next((r for r in results if not r.passed), None)
    # every hard gate A-E ran (evidence-job results, when configured, come after them)
    accepted = failed is None and {g.gate_id for g in gates()} <= {r.gate for r in results}
    return VerificationReport(
        submission_id=submission_id,
        miner_id=miner_id,
        verdict="accepted" if accepted else "rejected",
        reason_code=None if accepted else (failed.reason_code if failed else "incomplete_chain"),
        failed_gate=None if accepted else (failed.gate if failed else None),
        gates=results,
        sync=sync_from_results(results),
        config_version=config_version,
        robot_model_id=robot_model_id,
        robot_model_revision=robot_model_revision,
        points=points if accepted else 0.0,
        scores=scores if accepted else None,
    )
