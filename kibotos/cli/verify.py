"""In-process verification of one bundle: the gate chain without broker or database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from kibotos.bundle.reader import Limits, open_bundle
from kibotos.config.gates import GateConfig, load_config
from kibotos.errors import BundleError
from kibotos.reports.model import GateResult, VerificationReport
from processors.base import gates
from processors.chain import UNREADABLE_REASONS, build_report, run_chain


@dataclass(frozen=True)
class VerifyOutcome:
    report: VerificationReport
    unreadable: bool

    @property
    def exit_code(self) -> int:
        if self.unreadable:
            return 2
        return 0 if self.report.verdict == "accepted" else 1


def _ids(view) -> tuple[str, str | None, str | None, str | None]:
    raw = view.manifest_raw if isinstance(view.manifest_raw, dict) else {}
    sid = raw.get("submission_id")
    try:
        sid = str(uuid.UUID(str(sid)))
    except ValueError:
        sid = str(sid) if sid else "unknown"
    get = lambda k: raw.get(k) if isinstance(raw.get(k), str) else None  # noqa: E731
    return sid, get("miner_id"), get("robot_model_id"), get("robot_model_revision")


def verify_path(path: str | Path, config: GateConfig | None = None, limits: Limits | None = None) -> VerifyOutcome:
    config = config or load_config()
    first = gates()[0]
    try:
        view = open_bundle(path, limits or Limits.from_config(config))
        with view:
            sid, miner, robot, rev = _ids(view)
            results = run_chain(view, config)
    except BundleError as exc:
        extra = getattr(exc, "metrics", None)
        failed = GateResult(gate=first.gate_id, passed=False, reason_code=exc.reason_code,
                            metrics={"error": str(exc)[:500], **(extra if isinstance(extra, dict) else {})})
        report = build_report("unknown", [failed], config.config_version)
        return VerifyOutcome(report, unreadable=True)
    except (Exception, RecursionError, MemoryError) as exc:  # never a traceback for any input
        failed = GateResult(gate=first.gate_id, passed=False, reason_code="bundle_unreadable",
                            metrics={"error": f"{type(exc).__name__}: {str(exc)[:400]}"})
        return VerifyOutcome(build_report("unknown", [failed], config.config_version), unreadable=True)
    report = build_report(sid, results, config.config_version, miner_id=miner,
                          robot_model_id=robot, robot_model_revision=rev)
    unreadable = report.reason_code in UNREADABLE_REASONS
    return VerifyOutcome(report, unreadable)
