"""The novelty stage (design §8, §11): fingerprint a bundle, assess it against the
index, record it, and turn the evidence into ``s_novel``.

``s_novel`` in [0, 1]::

    s_match = min(1 - same_miner_penalty  * match(best same-miner candidate),
                  1 - cross_miner_penalty * match(best other-miner candidate))
    s_novel = s_match * (1 - artifact_penalty * artifact_score)
                      * (1 - quality_penalty * (1 - video quality))        # §7.1
                      * (1 - render_like_penalty * strength * confidence)  # §11, soft

Video quality and viewpoint compliance, and render-likeness, come from
``kibotos.novelty.quality`` (missing for rows fingerprinted before them: factor 1). A
render-like video is flagged ``render_like_video``; it is never a reject.

Between miners the earlier *upload* is the original: a cross-miner match with a later
upload that happened to be checked first (a copy racing ahead through other partitions)
does not lower ``s_novel``; it is reported (``cross_miner_later_match``, flag
``cross_miner_later_copy``) for the auditors. Within one miner the order of first checks
decides, so of two racing copies one is always judged against the other.

Hard rejects are reserved for the extremes: a near-exact copy of an earlier submission of
the same miner (``duplicate_submission``: ``s_novel`` 0) or of another miner's earlier
upload (``copied_submission``, ``match.reject_cross_miner_near_exact``) and an
``artifact_score`` at or above ``artifacts.reject_score`` (``synthetic_artifacts``).
Every other match is summarised as ``metrics["copy"]`` (the best earlier candidate of
either scope); the decision turns ``copy.match`` into the reward's copy factor
(``kibotos.scoring.reward``), so a perturbed copy earns a small fraction of a reward
however little ``S_novel`` weighs in ``S``.

Clawbacks: a copy that raced ahead of its original (checked first, so judged new, and
possibly already paid) is revised when the original is checked and finds it
(``cross_miner_later_match``): ``revise_later_copy`` stores the copy's revised result
(what it would have been, judged after its original) with the previous one under
``metrics["revision"]``, and the novelty stage sends the copy's stored input event on
with it; the decision then publishes a ``revised`` verdict and a compensating ledger
entry (``streams.stages.DecisionStage``).

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
from kibotos.media.embeddings import EMBEDDING_MODEL_ID
from kibotos.media.phash import hamming
from kibotos.novelty import index
from kibotos.novelty.config import NoveltyConfig, load_novelty_config
from kibotos.novelty.fingerprint import Fingerprint, fingerprint_bundle
from kibotos.reports.model import GateResult

GATE_ID = "novelty"
REASON_DUPLICATE = "duplicate_submission"
REASON_COPIED = "copied_submission"
FLAG_REVISED = "revised_after_original"
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
              received_at_ms: int | None = None, event_payload: bytes | None = None,
              sim_hashes: list[int] | None = None) -> GateResult:
        """The novelty ``GateResult`` of one submission (see the module docstring).

        :param now_ms: epoch milliseconds of this (first) check: the submission's place in
            the index's order and the end of its windows.
        :param received_at_ms: when it was uploaded (default: ``now_ms``), which orders
            matches between miners.
        :param event_payload: the stage's input record, stored with the row so that a
            later revision (``revise_later_copy``) can send the submission on again.
        :param sim_hashes: pHashes of the playback job's simulation renders (its keyframes'
            ``sim_phash``, design §8: renders are fingerprinted too), stored with the row and
            compared with the best candidates' (``sim_render_match``: evidence, reported).
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
            info["sim_render_hashes"] = [f"{int(h):016x}" for h in sim_hashes or []]
            index.record(self.client, submission_id=submission_id, miner_id=miner_id,
                         robot_model_id=_robot_model(view), created_at_ms=created_at_ms, fingerprint=fingerprint,
                         embedding_model=EMBEDDING_MODEL_ID, artifacts=artifacts, fingerprint_info=info,
                         received_at_ms=received_at_ms, event_payload=event_payload)
        else:
            created_at_ms, artifacts, info = stored.created_at_ms, stored.artifacts, stored.fingerprint
        best = index.find_candidates(self.client, submission_id, created_at_ms, info.get("motion_variants", []), cfg)
        result = self._decide(best, artifacts, info, created_at_ms, t0)
        sim = self._sim_render_matches(best, info)
        if sim:
            result.metrics["sim_render_match"] = sim
        index.store_result(self.client, submission_id, result.model_dump(mode="json"), self.config.config_version)
        return result

    def _sim_render_matches(self, best: dict[str, index.Candidate | None], info: dict[str, Any]) -> dict[str, Any]:
        """Per scope, the share of this submission's simulation renders that have a render of
        the best candidate within ``hash.hamming_threshold`` bits (renders of one trajectory
        through one camera are the same images). Empty without renders."""
        mine = [int(h, 16) for h in info.get("sim_render_hashes") or []]
        out: dict[str, Any] = {}
        if not mine:
            return out
        limit = self.config.novelty.hash.hamming_threshold
        for scope in ("same_miner", "cross_miner"):
            cand = best.get(scope)
            if cand is None:
                continue
            stored = index.get_entry(self.client, cand.submission_id)
            theirs = [int(h, 16) for h in (stored.fingerprint.get("sim_render_hashes") or [])] if stored else []
            if not theirs:
                continue
            close = sum(min(hamming(a, b) for b in theirs) <= limit for a in mine)
            out[scope] = {"submission_id": cand.submission_id, "fraction": round(close / len(mine), 4),
                          "renders": len(mine)}
        return out

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
        quality_factor, render_factor, quality_flags = _video_factors(artifacts, cfg)
        s_novel = s_match * (1.0 - pen.artifact * artifact_score) * quality_factor * render_factor

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
        flags += artifacts.get("flags", []) + quality_flags

        passed, reason = True, None
        if same is not None and same.near_exact:
            passed, reason, s_novel = False, REASON_DUPLICATE, 0.0
            flags.append("exact_duplicate")
        elif cross is not None and cross.near_exact and cfg.match.reject_cross_miner_near_exact:
            passed, reason, s_novel = False, REASON_COPIED, 0.0
            flags.append("exact_copy")
        elif artifact_score >= cfg.artifacts.reject_score:
            passed, reason = False, REASON_ARTIFACTS
        # the copy evidence the reward rule reads: the best earlier candidate of either scope
        copy = max((c for c in (same, cross) if c is not None and c.match > 0), key=lambda c: c.match, default=None)
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
            "copy": _copy_metrics(copy, "same_miner" if copy is same else "cross_miner") if copy is not None
            else None,
            "artifact_score": round(artifact_score, 4),
            "video_quality": (artifacts.get("video_quality") or {}).get("quality"),
            "quality_factor": round(quality_factor, 4),
            "render_like": {k: (artifacts.get("render_like") or {}).get(k) for k in ("strength", "confidence")},
            "render_like_factor": round(render_factor, 4),
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
            "quality": cfg.quality.model_dump(),
            "render_like": cfg.render_like.model_dump(),
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

    def revise_later_copy(self, original_id: str, original_miner: str, later: dict[str, Any],
                          now_ms: int) -> tuple[GateResult, bytes] | None:
        """The revised result of a later upload by another miner that was checked before
        ``original_id`` and matches it (``later``: the original's ``cross_miner_later_match``),
        stored with the copy's row, and the copy's stored input event (see the module
        docstring). The revision is what the copy's result would have been had the
        original been checked first: ``cross_miner_match`` = the original, ``s_novel``
        lowered by the cross-miner penalty, ``copy`` = the match, and a near-exact copy
        rejected as ``copied_submission``; ``metrics["revision"]`` keeps the previous
        (paid) values. One revision per copy; asking again returns the same one.

        None when there is nothing to revise: the copy's row, result or input event is not
        stored (still being checked elsewhere, or indexed before events were stored), or
        it was already revised for another original.
        """
        cfg = self.config.novelty
        stored = index.get_entry(self.client, later["submission_id"])
        if stored is None or stored.result is None or not stored.event_payload:
            return None
        previous = GateResult.model_validate(stored.result)
        done = previous.metrics.get("revision")
        if isinstance(done, dict):
            return (previous, stored.event_payload) if done.get("original_submission_id") == original_id else None
        m = dict(previous.metrics)
        pen = cfg.penalties
        match = float(later.get("match") or 0.0)
        artifact_factor = 1.0 - pen.artifact * float(m.get("artifact_score") or 0.0)
        artifact_factor *= float(m.get("quality_factor") or 1.0) * float(m.get("render_like_factor") or 1.0)
        original = dict(later, submission_id=original_id, miner_id=original_miner)
        original.pop("age_s", None)  # the original is the earlier upload, checked later
        flags = set(previous.flags) | {FLAG_REVISED}
        passed, reason = previous.passed, previous.reason_code
        old_novel = m.get("s_novel")
        new_novel = old_novel
        if isinstance(old_novel, (int, float)):
            new_novel = round(min(float(old_novel), (1.0 - pen.cross_miner * match) * artifact_factor), 6)
        if match >= cfg.match.report_threshold:
            flags.add("cross_miner_near_duplicate")
        if passed and later.get("near_exact") and cfg.match.reject_cross_miner_near_exact:
            passed, reason, new_novel = False, REASON_COPIED, 0.0 if new_novel is not None else None
            flags.add("exact_copy")
        old_copy = m.get("copy")
        new_copy = _copy_metrics_dict(original, "cross_miner")
        if isinstance(old_copy, dict) and float(old_copy.get("match") or 0.0) >= match:
            new_copy = old_copy
        m.update({
            "s_novel": new_novel,
            "cross_miner_match": original if match > float((m.get("cross_miner_match") or {}).get("match") or 0.0)
            else m.get("cross_miner_match"),
            "copy": new_copy,
            "flags": sorted(flags),
            "revision": {
                "number": 1,
                "original_submission_id": original_id,
                "original_miner_id": original_miner,
                "revised_at_ms": int(now_ms),
                "config_version": self.config.config_version,
                "previous": {"passed": previous.passed, "reason_code": previous.reason_code,
                             "s_novel": old_novel, "copy": old_copy, "flags": list(previous.flags)},
            },
        })
        revised = GateResult(gate=GATE_ID, passed=passed, reason_code=reason, metrics=m,
                             thresholds=previous.thresholds, flags=sorted(flags))
        index.store_result(self.client, later["submission_id"], revised.model_dump(mode="json"),
                           stored.result_config_version, revision=2)
        return revised, stored.event_payload


def _video_factors(artifacts: dict[str, Any], cfg) -> tuple[float, float, list[str]]:
    """``(quality_factor, render_like_factor, flags)`` of the stored video measurements."""
    pen = cfg.penalties
    quality = (artifacts.get("video_quality") or {}).get("quality")
    quality_factor = 1.0 - pen.quality * (1.0 - float(quality)) if quality is not None else 1.0
    render = artifacts.get("render_like") or {}
    strength, confidence = float(render.get("strength") or 0.0), float(render.get("confidence") or 0.0)
    flags = []
    if strength >= cfg.render_like.flag_strength:
        flags.append("render_like_video")
    terms = (artifacts.get("video_quality") or {}).get("terms") or {}
    flags += [f"video_low_{name}" for name, value in terms.items() if value is not None and value < 0.5]
    return quality_factor, 1.0 - pen.render_like * strength * confidence, flags


def _copy_metrics(cand: index.Candidate, scope: str) -> dict[str, Any]:
    return {"scope": scope, "submission_id": cand.submission_id, "miner_id": cand.miner_id,
            "match": round(cand.match, 4), "near_exact": cand.near_exact}


def _copy_metrics_dict(match: dict[str, Any], scope: str) -> dict[str, Any]:
    return {"scope": scope, "submission_id": match["submission_id"], "miner_id": match["miner_id"],
            "match": round(float(match.get("match") or 0.0), 4), "near_exact": bool(match.get("near_exact"))}
