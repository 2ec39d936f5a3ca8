"""The novelty stage (design §8, §11): fingerprint a bundle, assess it against the
index, record it, and turn the evidence into ``s_novel``.

``s_novel`` in [0, 1]::

    s_match = min(1 - same_miner_penalty  * match(best same-miner candidate),
                  1 - cross_miner_penalty * match(best other-miner candidate))
    s_novel = s_match * (1 - artifact_penalty * artifact_score)

Between miners the earlier *upload* is the original: a cross-miner match with a later
upload that happened to be checked first (a copy racing ahead through other partitions)
does not lower ``s_novel``; it is reported (``cross_miner_later_match``, flag
``cross_miner_later_copy``) for the auditors. Within one miner the order of first checks
decides, so of two racing copies one is always judged against the other.

Hard rejects are reserved for the extremes: a near-exact copy of an earlier submission of
the same miner (``duplicate_submission``: ``s_novel`` 0) and an ``artifact_score`` at or
above ``artifacts.reject_score`` (``synthetic_artifacts``).

Idempotency: the fingerprint row is recorded first (keyed by ``submission_id``), the
candidates are those checked before it, and the assessment is stored with the row. A
redelivered check of the same submission returns the stored assessment (under the same
``config_version``) or, after a crash between the two writes, re-assesses from the stored
row and its original ``created_at`` — never matching itself, never seeing later rows.
"""

from __future__ import annotations

import time
from typing import Any

from kibotos.bundle.reader import BundleView
from kibotos.embeddings import EMBEDDING_MODEL_ID
from kibotos.novelty import index
from kibotos.novelty.config import NoveltyConfig, load_novelty_config
from kibotos.novelty.fingerprint import Fingerprint, fingerprint_bundle
from kibotos.report import GateResult

GATE_ID = "novelty"
REASON_DUPLICATE = "duplicate_submission"
REASON_ARTIFACTS = "synthetic_artifacts"


def _robot_model(view: BundleView) -> str:
    value = view.manifest_raw.get("robot_model_id")
    return value if isinstance(value, str) else ""


class NoveltyChecker:
    """Assess submissions against the novelty index in ClickHouse and record them.

    :param client: a clickhouse-connect client (embedded ``chdb://`` or a server) on a
        database migrated with ``infra.migrate`` (table ``kibotos.novelty_index``).
    :param config: the versioned novelty config (default: the packaged one).
    """

    def __init__(self, client, config: NoveltyConfig | None = None):
        self.client = client
        self.config = config or load_novelty_config()

    def check(self, view: BundleView, submission_id: str, miner_id: str, now_ms: int,
              received_at_ms: int | None = None) -> GateResult:
        """The novelty ``GateResult`` of one submission (see the module docstring).

        :param now_ms: epoch milliseconds of this (first) check: the submission's place in
            the index's order and the end of its windows.
        :param received_at_ms: when it was uploaded (default: ``now_ms``), which orders
            matches between miners.
        :raises ServiceError: ClickHouse failed (the caller retries; nothing is half-judged).
        """
        t0 = time.perf_counter()
        cfg = self.config.novelty
        stored = index.get_entry(self.client, submission_id)
        if stored is not None and stored.result is not None and stored.result_config_version == self.config.config_version:
            return GateResult.model_validate(stored.result)
        if stored is None:
            created_at_ms = int(now_ms)
            fingerprint, artifacts = fingerprint_bundle(view, cfg)
            info = self._fingerprint_info(fingerprint)
            index.record(self.client, submission_id=submission_id, miner_id=miner_id,
                         robot_model_id=_robot_model(view), created_at_ms=created_at_ms, fingerprint=fingerprint,
                         embedding_model=EMBEDDING_MODEL_ID, artifacts=artifacts, fingerprint_info=info,
                         received_at_ms=received_at_ms)
        else:
            created_at_ms, artifacts, info = stored.created_at_ms, stored.artifacts, stored.fingerprint
        best = index.find_candidates(self.client, submission_id, created_at_ms, info.get("motion_variants", []), cfg)
        result = self._decide(best, artifacts, info, created_at_ms, t0)
        index.store_result(self.client, submission_id, result.model_dump(mode="json"), self.config.config_version)
        return result

    @staticmethod
    def _fingerprint_info(fp: Fingerprint) -> dict[str, Any]:
        return {
            "samples": len(fp.hashes),
            "sample_fps": fp.sample_fps,
            "motion_variants": fp.motion_variants,
            "motion_samples": int(fp.motion[0].shape[0]) if fp.motion else 0,
            "keyframes": fp.keyframes,
            "embedding_model": EMBEDDING_MODEL_ID if fp.embedding is not None else None,
            "trajectory_joints": int(fp.trajectory.shape[0]) if fp.trajectory.size else 0,
            "trajectory_samples": int(fp.trajectory.shape[1]) if fp.trajectory.size else 0,
            "masked_box": list(fp.masked_box) if fp.masked_box else None,
            "timings_ms": fp.timings_ms,
            "flags": list(fp.flags),
            "empty": fp.empty,
        }

    def _decide(self, best: dict[str, index.Candidate | None], artifacts: dict[str, Any], info: dict[str, Any],
                created_at_ms: int, t0: float) -> GateResult:
        cfg = self.config.novelty
        pen = cfg.penalties
        same, cross, later = best["same_miner"], best["cross_miner"], best["cross_miner_later"]
        s_same = 1.0 - pen.same_miner * same.match if same is not None else 1.0
        s_cross = 1.0 - pen.cross_miner * cross.match if cross is not None else 1.0
        s_match = min(s_same, s_cross)
        artifact_score = float(artifacts.get("artifact_score", 0.0))
        s_novel = s_match * (1.0 - pen.artifact * artifact_score)

        flags = list(info.get("flags", []))
        report = cfg.match.report_threshold
        for scope, cand in (("same_miner", same), ("cross_miner", cross)):
            if cand is None or cand.match < report:
                continue
            flags.append(f"{scope}_near_duplicate")
            if cand.visual >= report and cand.trajectory < report and cand.trajectory_corr is not None:
                flags.append(f"{scope}_video_reuse")
            if cand.trajectory >= report and cand.visual < report:
                flags.append(f"{scope}_trajectory_reuse")
            if cand.visual >= report and cand.motion_variant and cand.motion_variant != "identity":
                flags.append(f"{scope}_{cand.motion_variant.split(':')[0]}_copy")
        if later is not None and later.match >= report:
            flags.append("cross_miner_later_copy")  # a later upload by another miner copies this one
        flags += artifacts.get("flags", [])

        passed, reason = True, None
        if same is not None and same.near_exact:
            passed, reason, s_novel = False, REASON_DUPLICATE, 0.0
            flags.append("exact_duplicate")
        elif artifact_score >= cfg.artifacts.reject_score:
            passed, reason = False, REASON_ARTIFACTS
        applicable = not info.get("empty", False)
        metrics: dict[str, Any] = {
            "applicable": applicable,
            "s_novel": round(s_novel, 6) if applicable else None,
            "s_match": round(s_match, 6),
            "same_miner_match": same.as_metrics(created_at_ms) if same is not None and same.match > 0 else None,
            "cross_miner_match": cross.as_metrics(created_at_ms) if cross is not None and cross.match > 0 else None,
            "same_miner_candidates": same.candidates if same is not None else 0,
            "same_miner_matches": same.matches if same is not None else 0,
            "cross_miner_candidates": cross.candidates if cross is not None else 0,
            "cross_miner_matches": cross.matches if cross is not None else 0,
            "cross_miner_later_match": later.as_metrics(created_at_ms) if later is not None and later.match > 0
            else None,
            "artifact_score": round(artifact_score, 4),
            "artifacts": artifacts,
            "fingerprint": info,
            "flags": sorted(set(flags)),
            "config_version": self.config.config_version,
            "wall_ms": round((time.perf_counter() - t0) * 1000, 1),
        }
        if not applicable:
            metrics["reason"] = "nothing to fingerprint: no readable video and no moving trajectory"
        thresholds = {
            "config_version": self.config.config_version,
            "windows": cfg.windows.model_dump(),
            "penalties": cfg.penalties.model_dump(),
            "motion": {k: v for k, v in cfg.motion.model_dump().items() if k in ("corr_lo", "corr_hi", "max_lag_s")},
            "hash": cfg.hash.model_dump(),
            "prefilter": cfg.prefilter.model_dump(),
            "trajectory": {k: v for k, v in cfg.trajectory.model_dump().items()
                           if k in ("corr_lo", "corr_hi", "exact_corr", "max_lag_s")},
            "report_threshold": report,
            "artifact_reject_score": cfg.artifacts.reject_score,
        }
        return GateResult(gate=GATE_ID, passed=passed, metrics=metrics, thresholds=thresholds, reason_code=reason,
                          flags=sorted(set(flags)))
