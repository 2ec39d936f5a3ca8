"""The novelty index in ClickHouse (``kibotos.novelty_index``, migration 0004).

Everything that compares fingerprints runs in ClickHouse SQL, so the index never leaves
the database: a candidate query joins the submission's own stored row with the rows of
its windows and computes, per candidate,

* the appearance hash fraction: the best fraction, over lags, of aligned samples whose
  pHashes (identity, or the candidate's mirrored ones) are within ``hamming_threshold``
  bits (``bitCount(bitXor(a, b))``), and the near-exact fraction (identity hashes within
  ``exact_hamming``);
* the clip-embedding cosine (``cosineDistance``);
* for candidates passing the same-scene prefilter (embedding or hash fraction), the
  motion correlation: the best, over lags and variant pairings (mirror, crops, either
  way round), cosine of the overlapping motion signatures (``cosineDistance``);
* the trajectory correlation (same robot model and joint count only): the best, over
  lags, locally centred correlation of the overlapping trajectory fingerprints, pooled
  over joints from per-joint ``dotProduct`` / ``arraySum`` of the slices;

maps motion and trajectory through the config's ramps to ``visual`` and ``trajectory`` in
[0, 1], combines them as ``match = 1 - (1 - visual) * (1 - trajectory)`` and returns the
best candidate of each scope (same miner / other miners' earlier uploads / other miners'
later uploads) with counts.

Rows are compared only with rows checked *before* them (``(created_at, submission_id)``
order), so adding later submissions never changes an earlier submission's answer.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kibotos.errors import ServiceError
from kibotos.novelty.config import NoveltySection
from kibotos.novelty.fingerprint import Fingerprint

TABLE = "kibotos.novelty_index"
DAY_MS = 86_400_000

_COLUMNS = ["submission_id", "miner_id", "robot_model_id", "created_at", "received_at", "sample_fps", "frame_hashes",
            "mirror_hashes", "motion_variants", "motion_channels", "motion_len", "motion", "embedding_model",
            "embedding", "traj_rate_hz", "traj_joints", "traj_len", "traj_fingerprint", "artifacts_json",
            "fingerprint_json", "revision", "event_payload"]


@dataclass(frozen=True)
class StoredEntry:
    submission_id: str
    miner_id: str
    created_at_ms: int
    artifacts: dict[str, Any]
    fingerprint: dict[str, Any]
    revision: int
    result: dict[str, Any] | None
    result_config_version: str
    event_payload: bytes = b""  # the novelty stage's input record (migration 0006), for revisions


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _query(client, sql: str, parameters: dict[str, Any]):
    try:
        return client.query(sql, parameters=parameters)
    except Exception as exc:
        raise ServiceError(f"novelty index query failed: {exc}") from exc


def get_entry(client, submission_id: str) -> StoredEntry | None:
    """The stored row of ``submission_id`` (latest revision), or None."""
    res = _query(
        client,
        f"""SELECT submission_id, miner_id, toUnixTimestamp64Milli(created_at), artifacts_json, fingerprint_json,
               revision, result_json, result_config_version, event_payload
        FROM {TABLE} FINAL WHERE submission_id = {{sid:String}} LIMIT 1""",
        {"sid": submission_id},
    )
    if not res.result_rows:
        return None
    sid, miner, created, artifacts, fingerprint, revision, result, result_version, payload = res.result_rows[0]
    return StoredEntry(sid, miner, int(created), json.loads(artifacts or "{}"), json.loads(fingerprint or "{}"),
                       int(revision), json.loads(result) if result else None, result_version,
                       base64.b64decode(payload) if payload else b"")


def record(client, *, submission_id: str, miner_id: str, robot_model_id: str, created_at_ms: int,
           fingerprint: Fingerprint, embedding_model: str, artifacts: dict[str, Any],
           fingerprint_info: dict[str, Any], received_at_ms: int | None = None,
           event_payload: bytes | None = None) -> None:
    """Insert the fingerprint row (revision 0). Re-inserting the same row is harmless.
    ``received_at_ms``: the upload time (default: the check time); ``event_payload``: the
    input record to keep for a later revision (stored base64)."""
    traj = fingerprint.trajectory
    motion = fingerprint.motion
    row = [
        submission_id, miner_id, robot_model_id, _utc(created_at_ms),
        _utc(created_at_ms if received_at_ms is None else received_at_ms), float(fingerprint.sample_fps),
        [int(h) for h in fingerprint.hashes], [int(h) for h in fingerprint.mirror_hashes],
        list(fingerprint.motion_variants), int(motion[0].shape[1]) if motion else 0,
        int(motion[0].shape[0]) if motion else 0, [m.ravel().tolist() for m in motion],
        embedding_model if fingerprint.embedding is not None else "",
        fingerprint.embedding.astype(np.float32).tolist() if fingerprint.embedding is not None else [],
        float(fingerprint.trajectory_rate_hz), int(traj.shape[0]) if traj.size else 0,
        int(traj.shape[1]) if traj.size else 0, traj.ravel().astype(np.float32).tolist(),
        json.dumps(artifacts, sort_keys=True), json.dumps(fingerprint_info, sort_keys=True), 0,
        base64.b64encode(event_payload).decode("ascii") if event_payload else "",
    ]
    try:
        client.insert(TABLE, [row], column_names=_COLUMNS)
    except Exception as exc:
        raise ServiceError(f"cannot record novelty fingerprint: {exc}") from exc


def store_result(client, submission_id: str, result: dict[str, Any], config_version: str,
                 revision: int = 1) -> None:
    """Store the assessment with the row (``revision`` 1; 2: a clawback revision, which
    replaces the first assessment whatever the merge order), copying the fingerprint in SQL."""
    try:
        client.command(
            f"""INSERT INTO {TABLE}
            SELECT * REPLACE (toUInt8({int(revision)}) AS revision, {{result:String}} AS result_json,
                              {{version:String}} AS result_config_version, now64(3) AS inserted_at)
            FROM {TABLE} FINAL WHERE submission_id = {{sid:String}}""",
            parameters={"sid": submission_id, "result": json.dumps(result, sort_keys=True),
                        "version": config_version},
        )
    except Exception as exc:
        raise ServiceError(f"cannot store novelty result: {exc}") from exc


# --- similarity SQL ------------------------------------------------------------------

def _lags(max_lag: int) -> str:
    return f"arrayMap(i -> toInt32(i) - {max_lag}, range({2 * max_lag + 1}))"


def _overlap(len_a: str, len_b: str) -> str:
    return f"least({len_a} - greatest(lag, 0), {len_b} - greatest(-lag, 0))"


def _need(len_a: str, len_b: str, min_samples: str, min_fraction: str) -> str:
    return f"greatest({min_samples}, toInt64(ceil({min_fraction} * least({len_a}, {len_b}))))"


def _hash_similarity(a: str, b: str, threshold: str, max_lag: int) -> str:
    """Best fraction, over lags, of aligned samples of hash sequences ``a`` and ``b``
    within ``threshold`` bits (0 when no lag overlaps enough)."""
    n = _overlap(f"length({a})", f"length({b})")
    need = _need(f"length({a})", f"length({b})", "{hash_min_samples:Int64}", "{hash_min_overlap:Float64}")
    return (
        f"arrayMax(arrayMap(lag -> if({n} >= {need} AND {n} > 0, "
        f"arrayAvg(arrayMap((x, y) -> bitCount(bitXor(x, y)) <= {threshold}, "
        f"arraySlice({a}, greatest(lag, 0) + 1, {n}), arraySlice({b}, greatest(-lag, 0) + 1, {n}))), 0.), "
        f"{_lags(max_lag)}))"
    )


def _motion_pairs(variants: list[str]) -> list[tuple[int, int, str]]:
    """(query variant, candidate variant, label) pairings, 1-based indexes into the
    stored variants (identity, mirror, crops...). The label names what the query is
    relative to the candidate; ``:reverse`` means the candidate is the crop."""
    crops = [(i + 1, name) for i, name in enumerate(variants) if name.startswith("crop")]
    pairs = [(1, 1, "identity"), (2, 1, "mirror")]
    for i, name in crops:
        pairs += [(1, i, name), (2, i, f"mirror_{name}"), (i, 1, f"{name}:reverse"), (i, 2, f"mirror_{name}:reverse")]
    return pairs


def _spatial_offsets(width: int, shift_x: int, shift_y: int) -> list[int]:
    """Flat offsets of the spatial shifts searched at the best lag. Shifting a row-major
    thumbnail by ``dx`` columns is an offset of ``dx`` elements (each row's edge wraps
    into the next row: ``|dx| / width`` of the pairs are wrong, a small price)."""
    return [dy * width + dx for dy in range(-shift_y, shift_y + 1) for dx in range(-shift_x, shift_x + 1)
            if (dx, dy) != (0, 0)]


def _motion_similarity(pairs: list[tuple[int, int, str]], max_lag: int, offsets: list[int],
                       q: str = "q.", c: str = "c.") -> str:
    """Per pairing, the best cosine of the overlapping motion signatures: over lags, then
    over spatial ``offsets`` at the best lag (a crop that is not centred). ``q`` / ``c``:
    the prefixes of the query's and the candidate's motion columns."""
    ql, cl, p = f"{q}motion_len", f"{c}motion_len", f"toInt64({q}motion_channels)"

    def cosine(lag: str, off: str) -> str:
        n = _overlap(ql, cl).replace("lag", lag)
        need = _need(ql, cl, "{motion_min_samples:Int64}", "{motion_min_overlap:Float64}")
        size = f"greatest({n} * {p} - abs({off}), 0)"
        # arrayResize: equal sizes on every row, whether or not the branch is taken
        return (f"if({n} >= {need} AND {n} > 0, ifNotFinite(1. - cosineDistance("
                f"arrayResize(arraySlice({q}motion[tupleElement(pr, 1)], "
                f"greatest({lag}, 0) * {p} + greatest({off}, 0) + 1, {size}), {size}), "
                f"arrayResize(arraySlice({c}motion[tupleElement(pr, 2)], "
                f"greatest(-{lag}, 0) * {p} + greatest(-{off}, 0) + 1, {size}), {size})), -1.), -1.)")

    lags = _lags(max_lag)
    by_lag = f"arrayMap(lag -> {cosine('lag', '0')}, {lags})"
    scores = "tupleElement(t, 2)"
    best_lag = f"arrayElement({lags}, indexOf({scores}, arrayMax({scores})))"
    shifted = cosine(best_lag, "off").replace("tupleElement(pr, ", "tupleElement(tupleElement(t, 1), ")
    literal = "[" + ", ".join(f"({a}, {b})" for a, b, _ in pairs) + "]"
    offsets_sql = "[" + ", ".join(str(o) for o in offsets) + "]" if offsets else "[]"
    return (f"arrayMap(t -> greatest(arrayMax({scores}), arrayMax(arrayMap(off -> {shifted}, "
            f"arrayConcat([0], {offsets_sql})))), arrayMap(pr -> (pr, {by_lag}), {literal}))")


def scaled_trajectory(fingerprint: np.ndarray, scale: float) -> np.ndarray:
    """A ``(J, L)`` trajectory fingerprint replayed ``scale`` times as fast (linear
    interpolation): a copy played faster or slower lines up with its original at one of
    the config's ``trajectory.time_scales``."""
    if fingerprint.size == 0 or fingerprint.shape[1] < 2:
        return np.zeros((0, 0), np.float32)
    length = fingerprint.shape[1]
    x = np.arange(int(np.floor((length - 1) / scale)) + 1) * scale
    grid = np.arange(length)
    return np.stack([np.interp(x, grid, row) for row in fingerprint]).astype(np.float32)


def _trajectory_correlations(max_lag: int, qf: str = "q.traj_fingerprint", ql: str = "q.traj_len") -> str:
    """Per-lag locally centred correlation of q.traj and c.traj (joint-major, J x L):
    an array of (corr, lag) over the lags whose overlap is long enough. ``qf`` / ``ql``:
    another version of the query's fingerprint (a time-scaled one).

    Joints outside, lags inside: a lambda copies every array it captures once per element
    it maps, so the lag loop captures one joint's row of each fingerprint (L values), not
    the whole fingerprints (J x L); the per-joint terms are then pooled lag by lag
    (``sumForEach``, in joint order)."""
    cf, cl, j = "c.traj_fingerprint", "c.traj_len", "q.traj_joints"
    # (query offset, candidate offset, overlap, lag)
    spans = (f"arrayFilter(s -> tupleElement(s, 3) >= greatest({{traj_min_samples:Int64}}, "
             f"toInt64(ceil({{traj_min_overlap:Float64}} * least({ql}, {cl})))), "
             f"arrayMap(lag -> (toInt64(greatest(lag, 0)), toInt64(greatest(-lag, 0)), "
             f"toInt64(least({ql} - greatest(lag, 0), {cl} - greatest(-lag, 0))), lag), {_lags(max_lag)}))")
    rows_q = f"arrayMap(jj -> arraySlice({qf}, toInt64(jj) * {ql} + 1, {ql}), range({j}))"
    rows_c = f"arrayMap(jj -> arraySlice({cf}, toInt64(jj) * {cl} + 1, {cl}), range({j}))"
    # arrayResize: equal sizes on every row, whether or not the branch is taken
    a = "arrayResize(arraySlice(qj, tupleElement(s, 1) + 1, tupleElement(s, 3)), tupleElement(s, 3))"
    b = "arrayResize(arraySlice(cj, tupleElement(s, 2) + 1, tupleElement(s, 3)), tupleElement(s, 3))"
    # per joint and lag: (sum ab, sum a, sum b, sum aa, sum bb) -> the centred moments
    n = "toFloat64(tupleElement(s, 3))"
    moments = (f"arrayMap(m -> (tupleElement(m, 1) - tupleElement(m, 2) * tupleElement(m, 3) / tupleElement(m, 6), "
               f"tupleElement(m, 4) - tupleElement(m, 2) * tupleElement(m, 2) / tupleElement(m, 6), "
               f"tupleElement(m, 5) - tupleElement(m, 3) * tupleElement(m, 3) / tupleElement(m, 6)), "
               f"arrayMap(s -> (dotProduct({a}, {b}), arraySum({a}), arraySum({b}), dotProduct({a}, {a}), "
               f"dotProduct({b}, {b}), {n}), sp))")
    per_joint = f"arrayMap((qj, cj) -> {moments}, {rows_q}, {rows_c})"

    def pooled(k: int) -> str:
        return f"arrayReduce('sumForEach', arrayMap(js -> arrayMap(m -> tupleElement(m, {k}), js), pj))"

    return (f"arrayMap(sp -> arrayMap(pj -> arrayMap((cov, va, vb, s) -> (if(va > 1e-9 AND vb > 1e-9, "
            f"cov / sqrt(va * vb), 0.), tupleElement(s, 4)), {pooled(1)}, {pooled(2)}, {pooled(3)}, sp), "
            f"[{per_joint}])[1], [{spans}])[1]")


def _ramp(x: str, lo: str, hi: str) -> str:
    return f"least(1., greatest(0., ({x} - {lo}) / ({hi} - {lo})))"


def _candidates_sql(cfg: NoveltySection, pairs: list[tuple[int, int, str]]) -> str:
    """The candidate query. Its cost on a small index is ClickHouse's analysis of the SQL,
    which grows with the expression trees, so each heavy expression is written once: the
    time-scaled trajectories are compared by one expression mapped over the fingerprints
    (parameters), and each heavy array is a column of a subquery of its own, read by the
    next level, rather than an alias (an alias is expanded where it is used)."""
    fps = cfg.frames.sample_fps
    hash_lag = max(0, round(cfg.hash.max_lag_s * fps))
    motion_lag = max(0, round(cfg.motion.max_lag_s * fps))
    offsets = _spatial_offsets(cfg.motion.width, cfg.motion.shift_x, cfg.motion.shift_y)
    traj_lag = max(0, round(cfg.trajectory.max_lag_s * cfg.trajectory.rate_hz))
    # (corr, lag, time scale) at every lag of the stored fingerprint (scale 1, first: it wins
    # ties) and of each time-scaled one (parameters, computed once in numpy)
    versions = ("arrayZip(arrayConcat([q.traj_fingerprint], {traj_scaled:Array(Array(Float32))}), "
                "arrayConcat([toInt64(q.traj_len)], {traj_scaled_len:Array(Int64)}), "
                "arrayConcat([1.], {traj_scales:Array(Float64)}))")
    by_version = _trajectory_correlations(traj_lag, "tupleElement(v, 1)", "tupleElement(v, 2)")
    traj_all = (f"arrayFlatten(arrayMap(v -> arrayMap(x -> (tupleElement(x, 1), tupleElement(x, 2), "
                f"tupleElement(v, 3)), {by_version}), {versions}))")
    # identity and mirrored hashes within hamming, identity within exact_hamming: one expression
    hash_fractions = (f"arrayMap((h, t) -> {_hash_similarity('q.frame_hashes', 'h', 't', hash_lag)}, "
                      "[c.frame_hashes, c.mirror_hashes, c.frame_hashes], "
                      "[{hamming:UInt8}, {hamming:UInt8}, {exact_hamming:UInt8}])")
    hashes_ok = "(length(q.frame_hashes) > 0 AND length(c.frame_hashes) > 0 AND q.sample_fps = c.sample_fps)"
    emb_ok = ("(length(q.embedding) > 0 AND q.embedding_model = c.embedding_model "
              "AND length(c.embedding) = length(q.embedding))")
    motion_ok = ("(q.motion_len > 0 AND c.motion_len > 0 AND q.motion_channels = c.motion_channels "
                 "AND q.motion_variants = c.motion_variants AND q.sample_fps = c.sample_fps)")
    same_scene = ("(NOT embedding_compared OR embedding_cos >= {pre_emb:Float64} "
                  "OR hash_fraction >= {pre_hash:Float64})")
    traj_ok = ("(q.traj_len > 0 AND c.traj_len > 0 AND q.robot_model_id = c.robot_model_id "
               "AND q.traj_joints = c.traj_joints AND q.traj_rate_hz = c.traj_rate_hz)")
    # level 1: the pair's hashes, embedding and trajectories
    pairs_sql = f"""
    SELECT
        c.submission_id AS submission_id,
        c.miner_id AS miner_id,
        toUnixTimestamp64Milli(c.created_at) AS created_at_ms,
        c.miner_id = q.miner_id AS same_miner,
        multiIf(same_miner, 'same_miner', c.received_at > q.received_at, 'cross_miner_later', 'cross_miner')
            AS scope,
        {hashes_ok} AS hashes_compared,
        if(hashes_compared, {hash_fractions}, [0., 0., 0.]) AS hash_fractions,
        {emb_ok} AS embedding_compared,
        if(embedding_compared,
           ifNotFinite(1. - cosineDistance(q.embedding, arrayResize(c.embedding, length(q.embedding))), 0.),
           0.) AS embedding_cos,
        {motion_ok} AS motion_ok,
        q.motion AS q_motion, c.motion AS c_motion, q.motion_len AS q_motion_len, c.motion_len AS c_motion_len,
        q.motion_channels AS q_motion_channels,
        {traj_ok} AS trajectory_compared,
        if(trajectory_compared, {traj_all}, []) AS traj_by_lag,
        q.traj_len AS q_traj_len, c.traj_len AS c_traj_len
    FROM (SELECT * FROM {TABLE} FINAL WHERE submission_id = {{sid:String}} LIMIT 1) AS q
    CROSS JOIN (
        SELECT * FROM {TABLE} FINAL
        WHERE created_at >= fromUnixTimestamp64Milli({{since_ms:Int64}}, 'UTC') AND submission_id != {{sid:String}}
    ) AS c
    WHERE (c.created_at < q.created_at OR (c.created_at = q.created_at AND c.submission_id < q.submission_id))
      AND toUnixTimestamp64Milli(c.created_at) >= toUnixTimestamp64Milli(q.created_at)
          - if(c.miner_id = q.miner_id, {{miner_window_ms:Int64}}, {{global_window_ms:Int64}})
    """
    # level 2: the motion signatures, for candidates passing the same-scene prefilter
    motion_sql = f"""
    SELECT *, greatest(hash_fractions[1], hash_fractions[2]) AS hash_fraction, hash_fractions[3] AS exact_fraction,
        motion_ok AND {same_scene} AS motion_compared,
        if(motion_compared, {_motion_similarity(pairs, motion_lag, offsets, "q_", "c_")}, []) AS motion_by_pair
    FROM ({pairs_sql})
    """
    # level 3: scores from the level-2 columns
    inner = f"""
    SELECT
        submission_id, miner_id, created_at_ms, same_miner, scope, hashes_compared, hash_fraction,
        exact_fraction, embedding_compared, embedding_cos, motion_compared, motion_by_pair,
        if(length(motion_by_pair) > 0, arrayMax(motion_by_pair), 0.) AS motion_corr,
        trajectory_compared, traj_by_lag,
        -- a time-scaled comparison searches more alignments, so unrelated motions of one
        -- task reach higher correlations there: it has a stricter ramp of its own
        arrayMap(x -> if(tupleElement(x, 3) = 1.,
                         {_ramp('tupleElement(x, 1)', '{traj_lo:Float64}', '{traj_hi:Float64}')},
                         {_ramp('tupleElement(x, 1)', '{traj_scaled_lo:Float64}', '{traj_scaled_hi:Float64}')}),
                 traj_by_lag) AS traj_scores,
        -- the best by ramp value; among equals (or none) the unscaled comparison, by correlation
        arrayMap((x, sc) -> sc * 10. + if(tupleElement(x, 3) = 1., (tupleElement(x, 1) + 1.) / 2., 0.),
                 traj_by_lag, traj_scores) AS traj_keys,
        if(length(traj_by_lag) > 0, traj_by_lag[indexOf(traj_keys, arrayMax(traj_keys))], (0., 0, 1.))
            AS trajectory_best,
        tupleElement(trajectory_best, 1) AS trajectory_corr,
        tupleElement(trajectory_best, 2) AS trajectory_lag,
        tupleElement(trajectory_best, 3) AS trajectory_scale,
        if(length(traj_by_lag) > 0, arrayMax(traj_scores), 0.) AS trajectory,
        -- the same task in the same place moves alike on video; when the trajectories were
        -- compared and differ, only a near-identical video counts as the same footage
        if(motion_compared,
           if(length(traj_by_lag) > 0 AND trajectory = 0.,
              {_ramp('motion_corr', '{motion_other_lo:Float64}', '{motion_other_hi:Float64}')},
              {_ramp('motion_corr', '{motion_lo:Float64}', '{motion_hi:Float64}')}), 0.) AS visual,
        1. - (1. - visual) * (1. - trajectory) AS match,
        hashes_compared AND exact_fraction >= {{exact_fraction:Float64}}
            AND (trajectory_corr >= {{exact_corr:Float64}} OR (q_traj_len = 0 AND c_traj_len = 0)) AS near_exact
    FROM ({motion_sql})
    """
    return f"""
    SELECT * FROM (
        SELECT *, count() OVER w AS candidates, countIf(match >= {{report:Float64}}) OVER w AS matches
        FROM ({inner})
        WINDOW w AS (PARTITION BY scope)
    )
    ORDER BY scope, match DESC, created_at_ms, submission_id
    LIMIT 1 BY scope
    """


@dataclass(frozen=True)
class Candidate:
    """The best earlier submission of one scope and how it matched."""

    submission_id: str
    miner_id: str
    created_at_ms: int
    match: float
    visual: float
    trajectory: float
    motion_corr: float | None
    motion_variant: str | None  # the variant pairing that matched best
    hash_fraction: float
    exact_fraction: float
    embedding_cos: float | None
    trajectory_corr: float | None
    trajectory_lag_s: float | None
    trajectory_scale: float | None
    near_exact: bool
    candidates: int  # rows in this scope's window
    matches: int  # ... at or above report_threshold

    def as_metrics(self, now_ms: int) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "miner_id": self.miner_id,
            "age_s": round((now_ms - self.created_at_ms) / 1000, 3),
            "match": round(self.match, 4),
            "visual": round(self.visual, 4),
            "trajectory": round(self.trajectory, 4),
            "motion_corr": None if self.motion_corr is None else round(self.motion_corr, 4),
            "motion_variant": self.motion_variant,
            "hash_match_fraction": round(self.hash_fraction, 4),
            "exact_fraction": round(self.exact_fraction, 4),
            "embedding_cos": None if self.embedding_cos is None else round(self.embedding_cos, 4),
            "trajectory_corr": None if self.trajectory_corr is None else round(self.trajectory_corr, 4),
            "trajectory_lag_s": self.trajectory_lag_s,
            "trajectory_time_scale": self.trajectory_scale,
            "near_exact": self.near_exact,
        }


def _finite(x: float) -> float:
    return float(x) if math.isfinite(float(x)) else 0.0


def find_candidates(client, submission_id: str, created_at_ms: int, motion_variants: list[str],
                    cfg: NoveltySection) -> dict[str, Candidate | None]:
    """The best match of each scope among the rows checked before ``submission_id``:
    ``same_miner``, ``cross_miner`` (other miners' earlier uploads) and
    ``cross_miner_later`` (other miners' *later* uploads that were checked first: copies
    of this submission that raced ahead of it, which must not count against it)."""
    w = cfg.windows
    miner_ms, global_ms = round(w.same_miner_days * DAY_MS), round(w.global_days * DAY_MS)
    params = {
        "sid": submission_id,
        "since_ms": created_at_ms - max(miner_ms, global_ms),
        "miner_window_ms": miner_ms,
        "global_window_ms": global_ms,
        "hamming": cfg.hash.hamming_threshold,
        "exact_hamming": cfg.hash.exact_hamming,
        "hash_min_samples": cfg.hash.min_overlap_samples,
        "hash_min_overlap": cfg.hash.min_overlap_fraction,
        "motion_min_samples": cfg.motion.min_overlap_samples,
        "motion_min_overlap": cfg.motion.min_overlap_fraction,
        "motion_lo": cfg.motion.corr_lo,
        "motion_hi": cfg.motion.corr_hi,
        "motion_other_lo": cfg.motion.corr_lo_other_motion,
        "motion_other_hi": cfg.motion.corr_hi_other_motion,
        "pre_emb": cfg.prefilter.embedding_cos,
        "pre_hash": cfg.prefilter.hash_fraction,
        "traj_lo": cfg.trajectory.corr_lo,
        "traj_hi": cfg.trajectory.corr_hi,
        "traj_scaled_lo": cfg.trajectory.scaled_corr_lo,
        "traj_scaled_hi": cfg.trajectory.scaled_corr_hi,
        "traj_min_samples": cfg.trajectory.min_samples,
        "traj_min_overlap": cfg.trajectory.min_overlap_fraction,
        "exact_fraction": cfg.hash.exact_fraction,
        "exact_corr": cfg.trajectory.exact_corr,
        "report": cfg.match.report_threshold,
    }
    own = _query(client, f"SELECT traj_fingerprint, traj_joints, traj_len FROM {TABLE} FINAL "
                         "WHERE submission_id = {sid:String} LIMIT 1", {"sid": submission_id}).result_rows
    traj = np.zeros((0, 0), np.float32)
    if own and own[0][1] and own[0][2]:
        traj = np.asarray(own[0][0], np.float32).reshape(int(own[0][1]), int(own[0][2]))
    scaled = [scaled_trajectory(traj, float(scale)) for scale in cfg.trajectory.time_scales]
    params["traj_scaled"] = [t.ravel().tolist() for t in scaled]
    params["traj_scaled_len"] = [int(t.shape[1]) if t.size else 0 for t in scaled]
    params["traj_scales"] = [float(scale) for scale in cfg.trajectory.time_scales]
    pairs = _motion_pairs(motion_variants) if motion_variants else [(1, 1, "identity")]
    res = _query(client, _candidates_sql(cfg, pairs), params)
    out: dict[str, Candidate | None] = {"same_miner": None, "cross_miner": None, "cross_miner_later": None}
    for row in res.result_rows:
        r = dict(zip(res.column_names, row))
        scope = r["scope"]
        out[scope] = Candidate(
            submission_id=r["submission_id"],
            miner_id=r["miner_id"],
            created_at_ms=int(r["created_at_ms"]),
            match=_finite(r["match"]),
            visual=_finite(r["visual"]),
            trajectory=_finite(r["trajectory"]),
            motion_corr=_finite(r["motion_corr"]) if r["motion_compared"] else None,
            motion_variant=pairs[int(np.argmax(r["motion_by_pair"]))][2] if r["motion_compared"] else None,
            hash_fraction=_finite(r["hash_fraction"]),
            exact_fraction=_finite(r["exact_fraction"]),
            embedding_cos=_finite(r["embedding_cos"]) if r["embedding_compared"] else None,
            trajectory_corr=_finite(r["trajectory_corr"]) if r["trajectory_compared"] else None,
            trajectory_lag_s=round(int(r["trajectory_lag"]) / cfg.trajectory.rate_hz, 3)
            if r["trajectory_compared"] else None,
            trajectory_scale=float(r["trajectory_scale"]) if r["trajectory_compared"] else None,
            near_exact=bool(r["near_exact"]),
            candidates=int(r["candidates"]),
            matches=int(r["matches"]),
        )
    return out
