"""Alignment evidence (design §6-§7 ``S_align``, §9 "VLM as evidence"): does the submitted
trajectory record the motion the submitted video shows?

``check_alignment(view, event, store, config, vlm)`` is the pure job function of the
evidence job ``align`` (``gpu_consumers.jobs``); it runs after ``playback`` and reads the
real/sim keyframe pairs that job stored. Its result (gate ``alignment``) holds ``s_align``
in [0, 1], every input it was computed from, and the VLM call record.

Evidence, each term in [0, 1]:

* **image** — the playback pairs (real frame i, sim render i). Two similarity matrices
  ``S[i, j]`` between real frame i and sim frame j:

  - *embedding*: cosine of EfficientNet-Lite0 embeddings (``kibotos.media.embeddings``) after
    removing each domain's mean embedding over the episode (``e - mean(e)``,
    renormalised). The means carry what every frame of a domain shares (the real
    scene's background and texture, the renderer's look); what is left varies with the
    robot's pose. The raw cosines are reported too.
  - *silhouette*: IoU of what moves in the real frames and what moves in the sim renders
    (each frame's pixels that differ from the per-pixel median of its domain's
    keyframes, ``gpu_consumers.playback.foreground_masks``). The playback job's own
    silhouette IoU (whole robot vs moving real pixels) is reported per keyframe.

  Calibration against a shuffled baseline: pair i is compared with the mismatched pairs
  ``S[i, j]`` and ``S[j, i]`` for every j != i whose pose differs from pose i by at least
  ``images.min_pose_distance`` (joint-space norm; two keyframes in one pause show the same
  pose and cannot serve as a mismatch). ``auc`` is the fraction of those comparisons the
  true pair wins (ties count half): 0.5 is a shuffled pairing, 1 a pair that always beats
  every mismatch. Each measure's term is ``ramp(auc, auc_lo, auc_hi)`` and the image term
  their weighted mean (``images.weights``).

* **motion** — video motion energy ``E(t)`` (mean absolute difference of consecutive grey
  frames downsized to ``motion.decode_width``, in grey levels, at the midpoint between
  the two frames) against the joint speed ``|dq/dt|`` (``gpu_consumers.keyframes.joint_speed``),
  both on one clock (video time; kinematic time ``t`` is video time
  ``t - ts[0] + sync_offset``, the offset of gate C when confident, else the claim),
  resampled every ``grid_ms`` and smoothed by a ``smooth_ms`` moving average. ``corr`` is
  their Pearson correlation at that offset; the lag of the best correlation within
  ``+-max_lag_ms`` is reported (``best_offset_ms = sync_offset + best_lag``), not scored.
  The motion term is ``ramp(corr, corr_lo, corr_hi)``.

* **vlm** (optional, ``kibotos.vlm``) — up to ``vlm.max_pairs`` pairs, evenly spread, sent
  with the task schema. A valid answer gives ``v = 0.5 + (alignment_score - 0.5) * c``:
  the VLM's score shrunk towards the uninformative 0.5 by its confidence ``c`` (the
  Platt-calibrated confidence for a calibrated ``(model, prompt_version)``, else the raw
  one).

Combination (``ramp(x, lo, hi) = clip((x - lo) / (hi - lo), 0, 1)``)::

    s_evidence = sum(W_k * term_k) / sum(W_k)    over the available k in {image, motion}
    s_align    = (1 - w) * s_evidence + w * v    when the VLM answered validly
               = s_evidence                      otherwise
               = v                               with a valid VLM answer and no other term

with ``W = combine.weights`` and ``w = vlm.weight`` (``vlm.uncalibrated_weight`` for an
uncalibrated answer). Without image evidence (playback made fewer than ``min_pairs``
pairs, or the plan has no playback job) ``s_align`` is the motion term and
``metrics["reasons"]`` says why; the motion term is missing when video and kinematics
overlap less than ``min_overlap_ms`` or the trajectory is still (p95 joint speed below
``min_joint_speed``; a still *video* against a moving trajectory is evidence, corr ~ 0).
With no evidence at all ``applicable`` is False and ``s_align`` None. Without a VLM,
``metrics["vlm"] = {"status": "not_configured"}`` (flag ``vlm_not_configured``); a failed
call keeps its record (status, error, excerpt) and adds nothing to the score. A valid
answer also gives the task component ``vlm_task_success``, ``vlm_task_confidence`` (the
confidence ``c``) and ``vlm_phases_observed``.

**Secondary cameras** (``video/secondary_<name>``, design §7.4: the reward's multi-angle
multiplier reads their sum, ``metrics["angle_quality_sum"]``). Each is measured on the
primary video's clock (the same sync offset: the cameras share one) and gets
``metrics["secondary_cameras"][name]`` with ``quality`` in [0, 1]::

    quality = ramp(motion_corr, corr_lo, corr_hi) * ramp(view_match, view_lo, view_hi) * coverage

``motion_corr`` is the motion term's correlation on that camera's video; alone it cannot
tell this episode from another of the same task, whose rhythm it shares. ``view_match``
draws the kinematics through the camera's declared pose (the links' origins joined in
kinematic order) and compares change maps ``|frame(t + lag) - frame(t)|`` of the drawing
and the video: each real map's cosine with its own drawn map, ranked against the drawn
maps of frames ``min_separation_ms`` away (``pair_auc``); it is the fraction of frames
whose AUC reaches ``frame_auc_min``. ``coverage`` is the fraction of the kinematic span
that decoded frames cover. A camera is never a reason to reject: one that cannot be
measured (missing manifest entry or stream, undecodable, declared frame count off, too
little motion), repeats a viewpoint (optical axis within ``min_view_angle_deg`` of the
primary's or an earlier secondary's) or shows other motion gets quality 0 and a flag.
Mono bundles: ``{}`` and a sum of 0.

Hard rejects: alignment is a noisy label and passes, except when the evidence is
confident. ``video_kinematics_misaligned``: the video's motion is anti-correlated with the
joint speed (``corr <= reject.max_motion_corr``) AND every image measure puts the true
pairs no closer than the mismatched ones (``auc <= reject.max_image_auc``) on at least
``reject.min_pairs`` pairs. ``video_kinematics_mismatch`` (``mismatch_findings``,
thresholds under ``mismatch``; ``metrics["mismatch"]`` holds every measure and the
``findings``): while the trajectory moves, any one of: the video never changes; its
motion is uncorrelated with the joint speed at every lag; played backwards it matches
better; for a video of the robot, the links drawn through the declared primary camera
match its change maps in few frames (each frame ranked against frames far away: the
shuffled baseline); for a video of a person, the direction of its motion does not follow
the hand (the end effector through the declared camera) at any lag; the motion matches
far from the sync offset and clearly worse at it. Everything short of that stays soft
(``s_align``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gpu_consumers.keyframes import joint_speed
from gpu_consumers.playback import GATE_ID as PLAYBACK_GATE
from gpu_consumers.playback import foreground_masks, joints_at
from gpu_consumers.registry import EVIDENCE_GATES
from kibotos.bundle.reader import JOINT_POS, SECONDARY_PREFIX, TIMESTAMPS, BundleView, video_paths
from kibotos.config.alignment import AlignmentConfig, ImagesConfig, MotionConfig, RejectConfig, SecondaryConfig
from kibotos.errors import KibotosError, ServiceError
from kibotos.media.camera import project_points
from kibotos.media.video import decode_luma_widths, luma_from_frames
from kibotos.reports.model import GateResult
from kibotos.robots import get_robot
from kibotos.robots.kinematics import kinematics_for
from streams.in_flight import InFlight

GATE_ID = EVIDENCE_GATES["align"]
REJECT_CODE = "video_kinematics_misaligned"
MISMATCH_CODE = "video_kinematics_mismatch"


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


# --- keyframe pairs ------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    """One stored keyframe pair of the playback job, decoded (RGB uint8)."""

    frame: int
    kin_time_ms: float
    strategy: str
    real: np.ndarray
    sim: np.ndarray
    real_png: bytes
    sim_png: bytes
    playback_iou: float | None


def _decode_png(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise KibotosError("not a PNG image", reason_code="keyframe_unreadable")
    return np.ascontiguousarray(img[..., ::-1])


def load_pairs(playback: GateResult, store, max_png_bytes: int) -> tuple[list[Pair], dict[str, Any]]:
    """The playback result's keyframes that have both images, read from ``store``.

    :returns: the pairs (in keyframe order) and counts of the keyframes left out
        (``without_real_frame``: past the end of the video; ``unreadable``: missing or
        undecodable objects, with the first error).
    :raises ServiceError: the object store is unavailable (the validator's fault: retried).
    """
    entries = playback.metrics.get("keyframes") or []
    info: dict[str, Any] = {"playback_keyframes": len(entries), "without_real_frame": 0, "unreadable": 0}
    pairs: list[Pair] = []
    for e in entries:
        if not e.get("real_uri") or not e.get("sim_uri"):
            info["without_real_frame"] += 1
            continue
        try:
            real_png = store.read_bytes(e["real_uri"], max_png_bytes)
            sim_png = store.read_bytes(e["sim_uri"], max_png_bytes)
            real, sim = _decode_png(real_png), _decode_png(sim_png)
        except KibotosError as exc:
            if exc.reason_code == "service_unavailable":
                raise ServiceError(str(exc)) from exc
            info["unreadable"] += 1
            info.setdefault("unreadable_error", str(exc)[:300])
            continue
        if sim.shape != real.shape:
            sim = cv2.resize(sim, (real.shape[1], real.shape[0]), interpolation=cv2.INTER_AREA)
        pairs.append(Pair(int(e["frame"]), float(e["kin_time_ms"]), str(e.get("strategy", "")), real, sim,
                          real_png, sim_png, e.get("silhouette_iou")))
    return pairs, info


# --- image evidence ------------------------------------------------------------------------

def pair_auc(sim: np.ndarray, comparable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair similarity against the shuffled baseline, per pair.

    :param sim: (K, K) similarity of real frame i (row) and sim frame j (column).
    :param comparable: (K, K) bool, pairs i and j may serve as each other's mismatch.
    :returns: ``(auc, baseline, n)``: for each pair i, the fraction of its mismatched
        similarities ``sim[i, j]`` and ``sim[j, i]`` (j != i, comparable) below ``sim[i, i]``
        (ties half), their mean, and their count (auc and baseline NaN when 0).
    """
    k = sim.shape[0]
    mask = comparable & ~np.eye(k, dtype=bool)
    d = np.diag(sim)[:, None]
    wins = (d > sim) + 0.5 * (d == sim) + (d > sim.T) + 0.5 * (d == sim.T)
    n = 2 * mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = np.where(n > 0, (wins * mask).sum(axis=1) / n, np.nan)
        baseline = np.where(n > 0, ((sim + sim.T) * mask).sum(axis=1) / n, np.nan)
    return auc, baseline, n


def _overall_auc(auc: np.ndarray, n: np.ndarray) -> float | None:
    ok = n > 0
    return float((auc[ok] * n[ok]).sum() / n[ok].sum()) if ok.any() else None


def _centred(e: np.ndarray) -> np.ndarray:
    c = e - e.mean(axis=0, keepdims=True)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def _iou_matrix(real_fg: np.ndarray, sim_fg: np.ndarray) -> np.ndarray:
    r = real_fg.reshape(real_fg.shape[0], -1).astype(np.float32)
    s = sim_fg.reshape(sim_fg.shape[0], -1).astype(np.float32)
    inter = r @ s.T
    union = r.sum(1)[:, None] + s.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


def image_evidence(pairs: list[Pair], poses: np.ndarray, cfg: ImagesConfig) -> dict[str, Any]:
    """Embedding and silhouette similarity of the pairs against their shuffled baseline.

    :param poses: (K, J) joint positions of the keyframes (which pairs are comparable).
    :returns: ``{"term", "embedding_auc", "silhouette_auc", ..., "keyframes": [...]}``;
        ``term`` None when fewer than ``min_pairs`` pairs or no comparable mismatch.
    """
    from kibotos.media.embeddings import EMBEDDING_MODEL_ID, embed_images

    k = len(pairs)
    out: dict[str, Any] = {"pairs": k, "embedding_model": EMBEDDING_MODEL_ID, "term": None}
    if k < cfg.min_pairs:
        out["reason"] = f"{k} keyframe pairs with a real frame, fewer than {cfg.min_pairs}"
        return out
    dist = np.linalg.norm(poses[:, None, :] - poses[None, :, :], axis=-1)
    comparable = dist >= cfg.min_pose_distance
    emb = embed_images([p.real for p in pairs] + [p.sim for p in pairs])
    er, es = emb[:k], emb[k:]
    raw = er @ es.T
    centred = _centred(er) @ _centred(es).T
    emb_auc, emb_base, n = pair_auc(centred, comparable)
    _, raw_base, _ = pair_auc(raw, comparable)

    real_fg = foreground_masks(np.stack([p.real for p in pairs]))
    sim_fg = foreground_masks(np.stack([p.sim for p in pairs]))
    if real_fg is None or sim_fg is None:  # fewer than 3 frames: no static background to subtract
        iou = np.full((k, k), np.nan)
        sil_auc = sil_base = np.full(k, np.nan)
        sil_n = np.zeros(k, dtype=int)
    else:
        iou = _iou_matrix(real_fg, sim_fg)
        sil_auc, sil_base, sil_n = pair_auc(iou, comparable)

    measures = {"embedding": _overall_auc(emb_auc, n), "silhouette": _overall_auc(sil_auc, sil_n)}
    weights = cfg.weights.model_dump()
    terms = {m: _ramp(a, cfg.auc_lo, cfg.auc_hi) for m, a in measures.items() if a is not None and weights[m] > 0}
    total = sum(weights[m] for m in terms)
    with np.errstate(invalid="ignore"):
        out |= {
            "comparisons": int(n.sum()),
            "embedding_auc": _r(measures["embedding"]),
            "embedding_margin": _r(np.nanmean(np.diag(centred) - emb_base) if (n > 0).any() else None),
            "silhouette_auc": _r(measures["silhouette"]),
            "silhouette_margin": _r(np.nanmean(np.diag(iou) - sil_base) if (sil_n > 0).any() else None),
            "terms": {m: _r(v) for m, v in terms.items()},
            "term": _r(sum(weights[m] * v for m, v in terms.items()) / total) if total > 0 else None,
        }
    if out["term"] is None:
        out["reason"] = f"no two keyframes {cfg.min_pose_distance} rad apart in joint space: no mismatched baseline"
    out["keyframes"] = [{
        "frame": p.frame, "strategy": p.strategy, "kin_time_ms": round(p.kin_time_ms, 1),
        "embedding_cos": _r(raw[i, i]), "embedding_cos_shuffled": _r(raw_base[i]),
        "embedding_centred_cos": _r(centred[i, i]), "embedding_centred_cos_shuffled": _r(emb_base[i]),
        "embedding_auc": _r(emb_auc[i]),
        "silhouette_iou": _r(iou[i, i]), "silhouette_iou_shuffled": _r(sil_base[i]), "silhouette_auc": _r(sil_auc[i]),
        "playback_silhouette_iou": p.playback_iou, "comparisons": int(n[i]),
    } for i, p in enumerate(pairs)]
    return out


# --- motion evidence -----------------------------------------------------------------------

def _box(x: np.ndarray, width: int) -> np.ndarray:
    """Moving average over ``width`` samples of the finite run(s) of ``x`` (NaN kept NaN)."""
    if width <= 1:
        return x
    ok = np.isfinite(x)
    num = np.convolve(np.where(ok, x, 0.0), np.ones(width), mode="same")
    den = np.convolve(ok.astype(np.float64), np.ones(width), mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, num / den, np.nan)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 3:
        return None
    xs, ys = x - x.mean(), y - y.mean()
    den = float(np.sqrt((xs * xs).sum() * (ys * ys).sum()))
    return float((xs * ys).sum() / den) if den > 0 else None


def _video_luma(view: BundleView, width: int, camera: str = "primary") -> np.ndarray:
    return _video_lumas(view, (width,), camera)[0]


def _video_lumas(view: BundleView, widths: tuple[int, ...], camera: str) -> list[np.ndarray]:
    """Grey frames of ``camera`` at each of ``widths``, from one decode."""
    encoded, frames = video_paths(camera)
    if view.has(encoded):
        return [d.frames for d in decode_luma_widths(view.read(encoded).tobytes(), widths)]
    raw = view.read(frames)
    return [luma_from_frames(raw, target_width=width) for width in widths]


def motion_evidence(view: BundleView, sync_offset_ms: float, cfg: MotionConfig) -> dict[str, Any]:
    """Video motion energy vs joint speed on the video clock (see the module docstring).

    :returns: ``{"term", "corr", "best_lag_ms", "best_corr", "best_offset_ms", ...}``;
        ``term`` None with a ``reason`` when there is too little overlap or motion.
    """
    fps = float(view.manifest.video["primary"].fps)
    luma = _video_luma(view, cfg.decode_width)
    ts = view.read(TIMESTAMPS).astype(np.float64)
    return motion_correlation(luma, fps, ts, view.read(JOINT_POS).astype(np.float64), sync_offset_ms, cfg)


def motion_correlation(luma: np.ndarray, fps: float, ts: np.ndarray, q: np.ndarray, sync_offset_ms: float,
                       cfg: MotionConfig, energy_extra_ms: float = 0.0) -> dict[str, Any]:
    """``motion_evidence`` of grey frames ``luma`` (N, h, w) at ``fps`` against the joint
    positions ``q`` (T, J) at kinematic times ``ts`` (ms), ``sync_offset_ms`` apart;
    ``energy_extra_ms`` averages the motion energy once more (the filter ``q`` had)."""
    out: dict[str, Any] = {"sync_offset_ms": round(float(sync_offset_ms), 3), "term": None}
    if luma.shape[0] < 3 or ts.size < 3:
        out["reason"] = f"too short: {luma.shape[0]} video frames, {ts.size} kinematic samples"
        return out
    energy = np.abs(np.diff(luma.astype(np.int16), axis=0)).mean(axis=(1, 2))
    t_vid = (np.arange(1, luma.shape[0]) - 0.5) * 1000.0 / fps
    speed = joint_speed(ts, q, smooth_ms=cfg.smooth_ms)
    t_kin = ts - ts[0] + sync_offset_ms  # on the video clock

    g = cfg.grid_ms
    lo = min(t_vid[0], t_kin[0])
    grid = np.arange(lo, max(t_vid[-1], t_kin[-1]) + 1e-9, g)
    e = np.where((grid >= t_vid[0]) & (grid <= t_vid[-1]), np.interp(grid, t_vid, energy), np.nan)
    s = np.where((grid >= t_kin[0]) & (grid <= t_kin[-1]), np.interp(grid, t_kin, speed), np.nan)
    width = max(1, int(round(cfg.smooth_ms / g)))
    e, s = _box(e, width), _box(s, width)
    if energy_extra_ms > 0:
        e = _box(e, max(1, int(round(energy_extra_ms / g))))

    both = np.isfinite(e) & np.isfinite(s)
    overlap_ms = float(both.sum() * g)
    p95 = float(np.percentile(s[both], 95)) if both.any() else 0.0
    e_std = float(np.std(e[both])) if both.any() else 0.0
    out |= {"overlap_ms": round(overlap_ms, 1), "p95_joint_speed": _r(p95), "energy_std": _r(e_std)}
    if overlap_ms < cfg.min_overlap_ms:
        out["reason"] = f"video and kinematics overlap {overlap_ms:.0f} ms, less than {cfg.min_overlap_ms:g} ms"
        return out
    if p95 < cfg.min_joint_speed:
        out["reason"] = f"the trajectory is still (p95 joint speed {p95:.3f} rad/s < {cfg.min_joint_speed:g})"
        return out

    corr0 = _pearson(e[both], s[both])
    best_lag, best_corr = None, None
    steps = int(cfg.max_lag_ms // g)
    min_n = int(np.ceil(cfg.min_overlap_ms / g))
    for k in range(-steps, steps + 1):  # video shifted by k grid steps against the kinematics
        if k >= 0:
            ev, sv = e[k:], s[: s.size - k]
        else:
            ev, sv = e[: e.size + k], s[-k:]
        ok = np.isfinite(ev) & np.isfinite(sv)
        if ok.sum() < min_n:
            continue
        r = _pearson(ev[ok], sv[ok])
        if r is not None and (best_corr is None or r > best_corr):
            best_lag, best_corr = k * g, r
    out |= {"corr": _r(corr0), "best_lag_ms": best_lag, "best_corr": _r(best_corr),
            "best_offset_ms": None if best_lag is None else round(float(sync_offset_ms) + best_lag, 1)}
    if corr0 is None:
        out["reason"] = "no correlation: one of the series is constant"
        return out
    out["term"] = _r(_ramp(corr0, cfg.corr_lo, cfg.corr_hi))
    return out


# --- secondary cameras ---------------------------------------------------------------------

def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _full_qpos(view: BundleView, kin_t_ms: np.ndarray, joints: np.ndarray | None):
    """The robot and its full joint vector at kinematic times ``kin_t_ms``: the submitted
    joints (or ``joints`` at the submitted timestamps), interpolated; the others at home."""
    m = view.manifest
    robot = get_robot(m.robot_model_id, m.robot_model_revision)
    q = view.read(JOINT_POS).astype(np.float64) if joints is None else joints
    q = joints_at(view.read(TIMESTAMPS).astype(np.float64), q, kin_t_ms)
    full = np.tile(robot.home_qpos, (len(kin_t_ms), 1))
    full[:, [robot.joint_names.index(n) for n in m.joint_names]] = q
    return robot, full


def link_pixels(view: BundleView, camera: str, kin_t_ms: np.ndarray, width: int, height: int,
                joints: np.ndarray | None = None) -> np.ndarray:
    """(N, L, 2) pixel positions, in a ``width`` x ``height`` image, of the robot's links at
    kinematic times ``kin_t_ms`` (submitted joints, or ``joints`` at the submitted
    timestamps, interpolated; the others at home) seen through the manifest camera ``camera``."""
    m = view.manifest
    robot, full = _full_qpos(view, kin_t_ms, joints)
    cam = m.camera[camera]
    pix = project_points(kinematics_for(robot.model_id, robot.revision).link_positions(full),
                         cam.intrinsics.model_dump(), np.asarray(cam.extrinsics, dtype=np.float64))
    pix = pix * np.array([width / cam.intrinsics.width, height / cam.intrinsics.height])
    # points behind the camera project far away: keep them off the canvas and inside int32
    return np.clip(pix, -4.0 * max(width, height), 5.0 * max(width, height))


def skeleton_masks(pixels: np.ndarray, width: int, height: int, line_px: int) -> np.ndarray:
    """(N, height, width) uint8 images of the links at ``pixels`` (N, L, 2), joined in order."""
    pts = np.round(pixels * 4).astype(np.int32)  # two fractional bits (cv2's ``shift``)
    out = np.zeros((len(pts), height, width), np.uint8)
    for i in range(len(pts)):  # one polyline per frame: drawing is cv2's, not numpy's
        cv2.polylines(out[i], [pts[i].reshape(-1, 1, 2)], False, 255, line_px, cv2.LINE_AA, shift=2)
    return out


def _changes(frames: np.ndarray, idx: np.ndarray, lag: int, blur_px: float) -> np.ndarray:
    """(len(idx), h * w) ``|frames[i + lag] - frames[i]|`` for i in ``idx``, blurred."""
    d = np.abs(frames[idx + lag].astype(np.float32) - frames[idx].astype(np.float32))
    if blur_px > 0:
        d = np.stack([cv2.GaussianBlur(x, (0, 0), blur_px) for x in d])
    return d.reshape(len(idx), -1)


def view_match(luma: np.ndarray, drawn: np.ndarray, fps: float, inside: np.ndarray,
               cfg: SecondaryConfig) -> dict[str, Any]:
    """Does the video change where the kinematics drawn through its camera say it should?

    Change maps ``|frame(t + lag) - frame(t)|`` of the video (``luma``) and of the drawn
    links (``drawn``), both (N, h, w) on the video's frames; ``inside`` (N,) marks the frames
    inside the kinematic span. Frames where the drawing changes (``active_fraction``) are
    compared: each real map's cosine with its own drawn map against those of frames at least
    ``min_separation_ms`` away (``pair_auc``).

    :returns: ``{"term", "view_match", "view_auc", "compared_frames"}``: the fraction of
        frames whose AUC reaches ``frame_auc_min``, its ramp, the mean AUC; ``term`` None
        with a ``reason`` when fewer than ``min_frames`` frames can be compared.
    """
    out: dict[str, Any] = {"term": None, "view_match": None, "view_auc": None, "compared_frames": 0}
    lag = max(1, int(round(cfg.change_lag_ms * fps / 1000.0)))
    n = min(luma.shape[0], drawn.shape[0])
    idx = np.flatnonzero(inside[: max(n - lag, 0)] & inside[lag:n])
    if idx.size:
        idx = idx[np.unique(np.linspace(0, idx.size - 1, min(idx.size, 4 * cfg.max_frames)).astype(int))]
        change = _changes(drawn, idx, lag, 0.0).sum(axis=1)
        p95 = float(np.percentile(change, 95))
        idx = idx[change > cfg.active_fraction * p95] if p95 > 0 else idx[:0]
        idx = idx[np.unique(np.linspace(0, idx.size - 1, min(idx.size, cfg.max_frames)).astype(int))] \
            if idx.size else idx
    if idx.size < cfg.min_frames:
        out["reason"] = (f"{idx.size} frames where the drawn links move inside the kinematic span, "
                         f"fewer than {cfg.min_frames}")
        return out
    real, pred = (_changes(x, idx, lag, cfg.blur_px) for x in (luma, drawn))
    real /= np.maximum(np.linalg.norm(real, axis=1, keepdims=True), 1e-9)
    pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-9)
    t = idx * 1000.0 / fps
    auc, _, count = pair_auc(real @ pred.T, np.abs(t[:, None] - t[None, :]) >= cfg.min_separation_ms)
    ok = count > 0
    if ok.sum() < cfg.min_frames:
        out["reason"] = (f"{int(ok.sum())} frames with a mismatch {cfg.min_separation_ms:g} ms away, "
                         f"fewer than {cfg.min_frames}")
        return out
    match = float(np.mean(auc[ok] >= cfg.frame_auc_min))
    return out | {"term": _r(_ramp(match, cfg.view_lo, cfg.view_hi)), "view_match": _r(match),
                  "view_auc": _r(_overall_auc(auc, count)), "compared_frames": int(ok.sum())}


def _coverage(frames: int, fps: float, span_start_ms: float, span_ms: float) -> float:
    """Fraction of the kinematic span (on the video clock) that decoded frames cover."""
    if span_ms <= 0:
        return float(frames > 0)
    # each frame shows the scene for 1 / fps after its time
    covered = min(span_start_ms + span_ms, frames * 1000.0 / fps) - max(span_start_ms, 0.0)
    return float(np.clip(covered / span_ms, 0.0, 1.0))


def measure_secondary(view: BundleView, camera: str, sync_offset_ms: float, config: AlignmentConfig,
                      seen_axes: dict[str, np.ndarray]) -> dict[str, Any]:
    """One secondary camera's entry of ``metrics["secondary_cameras"]`` (see
    ``secondary_evidence``); ``seen_axes`` holds the optical axes of the views measured
    before it (camera key -> axis), and gets this one's when it earns a quality."""
    cfg = config.secondary
    m = view.manifest
    entry: dict[str, Any] = {"quality": 0.0, "stream": f"video/{camera}", "motion_corr": None, "view_match": None,
                             "coverage": None, "frames": None, "flags": []}
    video, cam = m.video.get(camera), m.camera.get(camera)
    encoded, raw = video_paths(camera)
    if video is None or cam is None:
        missing = [f"{part}.{camera}" for part, v in (("video", video), ("camera", cam)) if v is None]
        return entry | {"flags": ["secondary_manifest_missing"], "reason": f"the manifest has no {', '.join(missing)}"}
    if not (view.has(encoded) or view.has(raw)):
        return entry | {"flags": ["secondary_video_missing"], "reason": f"no {encoded} or {raw}"}
    fps = float(video.fps)
    ts = view.read(TIMESTAMPS).astype(np.float64)
    try:
        luma, motion_luma = _video_lumas(view, (cfg.decode_width, config.motion.decode_width), camera)
    except KibotosError as exc:  # unreadable, wrong dtype or shape: no bonus, never a reject
        return entry | {"flags": ["secondary_video_unreadable"], "reason": str(exc)[:300]}
    n = int(luma.shape[0])
    entry |= {"frames": n, "frame_count_declared": video.frame_count, "fps": fps,
              "coverage": _r(_coverage(n, fps, sync_offset_ms, float(ts[-1] - ts[0])))}

    motion = motion_correlation(motion_luma, fps, ts, view.read(JOINT_POS).astype(np.float64), sync_offset_ms,
                                config.motion)
    entry["motion_corr"] = motion.get("corr")
    kin_t = np.arange(n) * 1000.0 / fps - sync_offset_ms + ts[0]  # the frames' kinematic times
    inside = (kin_t >= ts[0]) & (kin_t <= ts[-1])
    h, w = luma.shape[1:]
    drawn = skeleton_masks(link_pixels(view, camera, kin_t, w, h), w, h, cfg.line_px) if n else luma
    vm = view_match(luma, drawn, fps, inside, cfg)
    entry |= {k: vm[k] for k in ("view_match", "view_auc", "compared_frames")}

    axis = np.asarray(cam.extrinsics, dtype=np.float64)[:3, 2]
    angles = {k: _angle_deg(axis, a) for k, a in seen_axes.items()}
    entry["view_angle_deg"] = {k: _r(a, 1) for k, a in angles.items()}
    terms = {"motion": None if entry["motion_corr"] is None else _ramp(entry["motion_corr"], cfg.corr_lo, cfg.corr_hi),
             "view": vm["term"]}
    entry["terms"] = {k: _r(v) for k, v in terms.items()}
    problems: list[tuple[str, str]] = []
    if abs(n - video.frame_count) > max(2, cfg.frame_count_tolerance * video.frame_count):
        problems.append(("secondary_frame_count_mismatch", f"{n} frames decoded, {video.frame_count} declared"))
    same = [k for k, a in angles.items() if a < cfg.min_view_angle_deg]
    if same:
        problems.append(("secondary_same_viewpoint",
                         f"optical axis within {cfg.min_view_angle_deg:g} degrees of {', '.join(same)}"))
    for name, term, part in (("motion", terms["motion"], motion), ("view", terms["view"], vm)):
        if term is None:
            problems.append((f"secondary_{name}_evidence_missing", part.get("reason", "unavailable")))
    if problems:
        return entry | {"flags": [code for code, _ in problems], "reason": "; ".join(why for _, why in problems)}
    quality = terms["motion"] * terms["view"] * entry["coverage"]
    if quality > 0:
        seen_axes[camera] = axis
    # a term at 0: this video does not show these kinematics (another episode, another robot)
    entry["flags"] = [f"secondary_{k}_mismatch" for k, v in terms.items() if v == 0]
    return entry | {"quality": _r(quality)}


def secondary_evidence(view: BundleView, sync_offset_ms: float, config: AlignmentConfig) -> dict[str, dict]:
    """``{name: entry}`` for the bundle's secondary cameras (``secondary_<name>``; ``{}`` for a
    mono bundle), at most ``secondary.max_cameras`` measured, by name. Each entry holds
    ``quality`` in [0, 1] (0 with ``flags`` and a ``reason`` when the camera cannot be
    measured, repeats a viewpoint, or shows something else), ``motion_corr``, ``view_match``,
    ``coverage``, ``frames`` and the terms (see the module docstring)."""
    out: dict[str, dict] = {}
    primary = view.manifest.camera["primary"]
    seen = {"primary": np.asarray(primary.extrinsics, dtype=np.float64)[:3, 2]}
    for k, camera in enumerate(view.secondary_cameras()):
        name = camera[len(SECONDARY_PREFIX):]
        if k >= config.secondary.max_cameras:
            out[name] = {"quality": 0.0, "stream": f"video/{camera}", "flags": ["secondary_cameras_capped"],
                         "reason": f"only {config.secondary.max_cameras} secondary cameras are measured"}
            continue
        try:
            out[name] = measure_secondary(view, camera, sync_offset_ms, config, seen)
        except ServiceError:
            raise
        except Exception as exc:  # an optional camera never fails the job: it earns nothing
            out[name] = {"quality": 0.0, "stream": f"video/{camera}", "flags": ["secondary_camera_error"],
                         "reason": f"{type(exc).__name__}: {exc}"[:300]}
    return out


# --- does the video show this trajectory at all? -------------------------------------------

def video_flow(luma: np.ndarray, min_px: float) -> np.ndarray:
    """(N - 1, 2) mean optical flow (Farneback, pixels per frame) of the pixels that move
    at least ``min_px`` between consecutive grey frames (0 where none does)."""
    out = np.zeros((max(luma.shape[0] - 1, 0), 2))
    for i in range(out.shape[0]):  # one flow field per frame pair: cv2's loop, not numpy's
        f = cv2.calcOpticalFlowFarneback(luma[i], luma[i + 1], None, 0.5, 2, 9, 2, 5, 1.1, 0)
        moving = np.linalg.norm(f, axis=-1) > min_px
        if moving.sum() > 3:
            out[i] = f[moving].mean(axis=0)
    return out


def smoothed_joints(view: BundleView, smooth_ms: float) -> np.ndarray:
    """(T, J) the submitted joint positions, each averaged over the samples within
    ``smooth_ms / 2`` of it on the real timestamps: an honest recording's sensor noise
    (white, up to the 0.03 rad gate E tolerates) would otherwise swamp the frame-to-frame
    motion these measures compare; moves of a second or more pass unchanged."""
    t = view.read(TIMESTAMPS).astype(np.float64)
    q = view.read(JOINT_POS).astype(np.float64)
    if smooth_ms <= 0 or t.size < 3:
        return q
    lo = np.searchsorted(t, t - smooth_ms / 2, side="left")
    hi = np.searchsorted(t, t + smooth_ms / 2, side="right")
    cs = np.vstack([np.zeros((1, q.shape[1])), np.cumsum(q, axis=0)])
    return (cs[hi] - cs[lo]) / (hi - lo)[:, None]


def hand_pixels_at(view: BundleView, kin_t_ms: np.ndarray, width: int, height: int,
                   joints: np.ndarray | None = None) -> np.ndarray:
    """(N, E, 2) pixels of the robot's end effectors (the demonstrator's hands once
    retargeted; the keypoint centroid without one) at kinematic times ``kin_t_ms`` through
    the primary camera, in a ``width`` x ``height`` image."""
    m = view.manifest
    robot, full = _full_qpos(view, kin_t_ms, joints)
    kin = kinematics_for(robot.model_id, robot.revision)
    links = tuple(robot.end_effector_links)
    pts = kin.link_positions(full, links) if links else kin.link_positions(full).mean(axis=1, keepdims=True)
    cam = m.camera["primary"]
    pix = project_points(pts, cam.intrinsics.model_dump(), np.asarray(cam.extrinsics, dtype=np.float64))
    return pix * np.array([width / cam.intrinsics.width, height / cam.intrinsics.height])


def _direction_agreement(flow: np.ndarray, hand: np.ndarray, active: np.ndarray, max_steps: int,
                         min_n: int) -> tuple[float | None, float | None, int]:
    """Mean cosine between the video's flow and the hand's image velocity over the frames
    where the hand moves (``active``), every such frame weighing the same (a frame whose
    video does not move scores 0): at lag 0 and the best over lags ``-max_steps..max_steps``
    (the flow shifted by k frames). ``(at0, best, best_k)``; None with fewer than ``min_n``."""
    fn = flow / np.maximum(np.linalg.norm(flow, axis=1, keepdims=True), 1e-9)
    hn = hand / np.maximum(np.linalg.norm(hand, axis=1, keepdims=True), 1e-9)
    idx = np.flatnonzero(active)
    at0, best, best_k = None, None, 0
    for k in range(-max_steps, max_steps + 1):
        ok = idx[(idx + k >= 0) & (idx + k < len(fn))]
        if ok.size < min_n:
            continue
        c = float(np.mean((fn[ok + k] * hn[ok]).sum(axis=1)))
        if k == 0:
            at0 = c
        if best is None or c > best:
            best, best_k = c, k
    return at0, best, best_k


def hand_path(view: BundleView, sync_offset_ms: float, config: AlignmentConfig) -> dict[str, Any]:
    """Does the direction of the video's motion follow the hand? The mean optical flow of
    the moving pixels (``video_flow``) against the image velocity of each end effector
    through the primary camera (``hand_pixels_at``; the joints averaged over
    ``mismatch.hand_smooth_ms``, the flow alike), both smoothed by ``motion.smooth_ms``,
    compared on the frames where that hand moves (at least ``mismatch.hand_active_fraction``
    of its p95 image speed) by their mean cosine (``_direction_agreement``): at the sync
    offset (``corr``) and the best over lags within ``motion.max_lag_ms`` (``best_corr``),
    for the end effector that agrees best. Every move counts alike, so another episode of
    the same task, whose big task moves go the same way, still disagrees on the others;
    a still video has no direction at all."""
    mc, cfg = config.motion, config.mismatch
    fps = float(view.manifest.video["primary"].fps)
    luma = _video_luma(view, cfg.hand_decode_width)
    n, h, w = luma.shape
    out: dict[str, Any] = {"corr": None, "best_corr": None, "best_lag_ms": None}
    if n < 3:
        return out | {"reason": f"{n} video frames"}
    flow = video_flow(luma, cfg.flow_min_px)
    ts = view.read(TIMESTAMPS).astype(np.float64)
    kin_t = np.arange(n) * 1000.0 / fps - sync_offset_ms + ts[0]
    inside = (kin_t[1:] >= ts[0]) & (kin_t[:-1] <= ts[-1])
    hands = np.diff(hand_pixels_at(view, kin_t, w, h, smoothed_joints(view, cfg.hand_smooth_ms)), axis=0)
    width = max(1, int(round(mc.smooth_ms * fps / 1000.0)))
    smooth = lambda x: np.stack([np.convolve(x[:, j], np.ones(width) / width, mode="same")  # noqa: E731
                                 for j in range(x.shape[1])], axis=1)
    # the flow gets the joints' averaging too (as a box over the frames), so both series pass
    # the same filter and no phase lag between them looks like a disagreement
    extra = max(1, int(round(cfg.hand_smooth_ms * fps / 1000.0)))
    flow = np.stack([np.convolve(flow[:, j], np.ones(extra) / extra, mode="same") for j in range(2)], axis=1)
    a = smooth(flow)
    steps = int(mc.max_lag_ms * fps / 1000.0)
    min_n = int(np.ceil(mc.min_overlap_ms * fps / 1000.0 * cfg.hand_active_fraction))
    for e in range(hands.shape[1]):
        v = smooth(hands[:, e])
        speed = np.linalg.norm(v, axis=1)
        p95 = float(np.percentile(speed[inside], 95)) if inside.any() else 0.0
        active = inside & (speed >= cfg.hand_active_fraction * p95) & (p95 > 0)
        at0, best, k = _direction_agreement(a, v, active, steps, min_n)
        if best is not None and (out["best_corr"] is None or best > out["best_corr"]):
            out = {"corr": _r(at0), "best_corr": _r(best), "best_lag_ms": round(k * 1000.0 / fps, 1),
                   "end_effector": e, "active_frames": int(active.sum())}
    if out["best_corr"] is None:
        out["reason"] = "no hand motion to compare"
    return out


def primary_view(view: BundleView, sync_offset_ms: float, config: AlignmentConfig) -> dict[str, Any]:
    """``view_match`` of the primary camera: the robot's links drawn through the declared
    camera against the video's change maps, each frame ranked against frames at least
    ``secondary.min_separation_ms`` away (the secondary cameras' measure, on the primary)."""
    cfg = config.secondary
    fps = float(view.manifest.video["primary"].fps)
    luma = _video_luma(view, cfg.decode_width)
    ts = view.read(TIMESTAMPS).astype(np.float64)
    n, h, w = luma.shape
    kin_t = np.arange(n) * 1000.0 / fps - sync_offset_ms + ts[0]
    inside = (kin_t >= ts[0]) & (kin_t <= ts[-1])
    joints = smoothed_joints(view, config.mismatch.kin_smooth_ms)
    drawn = skeleton_masks(link_pixels(view, "primary", kin_t, w, h, joints), w, h, cfg.line_px)
    return view_match(luma, drawn, fps, inside, cfg)


def mismatch_findings(view: BundleView, sync_offset_ms: float,
                      config: AlignmentConfig) -> tuple[list[str], dict[str, Any]]:
    """The findings that confidently say the video does not show this trajectory (see
    ``mismatch`` in ``kibotos/config/alignment.yaml``) and the metrics they were decided on.
    None while the trajectory is still or the two series overlap too little.

    The motion correlations here are ``motion_correlation`` on the joints averaged over
    ``mismatch.kin_smooth_ms`` (``smoothed_joints``) and the video's motion energy averaged
    alike (the same filter on both series): honest sensor noise must not make a genuine
    video look uncorrelated (the soft ``motion`` term keeps the raw joints, so noise still
    costs S_align)."""
    from processors.gate_c_sync import video_motion_energy

    cfg = config.mismatch
    subject = view.manifest.video["primary"].subject
    fps = float(view.manifest.video["primary"].fps)
    ts = view.read(TIMESTAMPS).astype(np.float64)
    q = smoothed_joints(view, cfg.kin_smooth_ms)
    luma = _video_luma(view, config.motion.decode_width)
    motion = motion_correlation(luma, fps, ts, q, sync_offset_ms, config.motion, cfg.kin_smooth_ms)
    metrics: dict[str, Any] = {"subject": subject, "applicable": False, "motion": {
        k: motion.get(k) for k in ("corr", "best_corr", "best_lag_ms", "p95_joint_speed", "overlap_ms")}}
    p95, overlap = motion.get("p95_joint_speed"), motion.get("overlap_ms")
    if p95 is None or overlap is None or p95 < config.motion.min_joint_speed or overlap < config.motion.min_overlap_ms:
        metrics["reason"] = "the trajectory is still or overlaps the video too little"
        return [], metrics
    metrics["applicable"] = True
    _, changed = video_motion_energy(luma, fps)
    metrics["video_max_changed_fraction"] = _r(float(changed.max()) if changed.size else 0.0, 6)
    findings: list[str] = []
    if metrics["video_max_changed_fraction"] <= cfg.static_max_changed_fraction:
        findings.append("video_static")
    best, corr = motion.get("best_corr"), motion.get("corr")
    if best is None or best <= cfg.max_best_corr:
        findings.append("motion_uncorrelated")
    rev = motion_correlation(luma[::-1], fps, ts, q, sync_offset_ms, config.motion, cfg.kin_smooth_ms).get("best_corr")
    metrics["reversed_best_corr"] = rev
    if rev is not None and rev >= cfg.min_reversed_corr and rev >= (best if best is not None else -1.0) + cfg.reversed_margin:
        findings.append("time_reversed")
    if subject == "robot":
        pv = primary_view(view, sync_offset_ms, config)
        metrics["primary_view"] = {k: pv.get(k) for k in ("view_match", "view_auc", "compared_frames", "reason")
                                   if k in pv}
        if pv.get("view_match") is not None and pv["view_match"] <= cfg.max_view_match:
            findings.append("frames_at_baseline")
    else:
        hp = hand_path(view, sync_offset_ms, config)
        metrics["hand_path"] = hp
        if hp.get("best_corr") is None or hp["best_corr"] <= cfg.max_hand_corr:
            findings.append("hand_path_mismatch")
    lag = motion.get("best_lag_ms")
    if (best is not None and corr is not None and lag is not None and best >= cfg.min_elsewhere_corr
            and abs(lag) >= cfg.min_elsewhere_ms and corr <= best - cfg.elsewhere_margin):
        findings.append("offset_elsewhere")
    metrics["findings"] = findings
    return findings, metrics


# --- the VLM -------------------------------------------------------------------------------

def _spread(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    return [items[i] for i in np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))]


def _task_schema(view: BundleView):
    """The manifest's task schema, or None (none declared, or unknown: the task stage reports that)."""
    from kibotos.tasks import UnknownTask, get_task

    task = view.manifest.task
    if task is None:
        return None
    try:
        return get_task(task.task_id, task.task_version)
    except UnknownTask:
        return None


def vlm_evidence(vlm, pairs: list[Pair], view: BundleView, config: AlignmentConfig) -> dict[str, Any]:
    """The call record of ``vlm`` on the pairs (``{"status": "not_configured"}`` without a
    provider), with ``term`` (``v`` of the module docstring) and ``weight`` when valid."""
    if vlm is None:
        return {"status": "not_configured"}
    from kibotos.vlm import KeyframePair

    m = view.manifest
    chosen = _spread(pairs, config.vlm.max_pairs)
    record = vlm.evaluate([KeyframePair(p.frame, p.kin_time_ms, p.real_png, p.sim_png) for p in chosen],
                          _task_schema(view), f"{m.robot_model_id}@{m.robot_model_revision}")
    out = record.model_dump(mode="json")
    if record.ok:
        calibrated = record.calibration.status == "calibrated"
        c = record.calibrated_confidence if calibrated else record.answer.confidence
        out["term"] = _r(0.5 + (record.answer.alignment_score - 0.5) * c)
        out["weight"] = config.vlm.weight if calibrated else config.vlm.uncalibrated_weight
        out["confidence_used"] = _r(c)
    return out


# --- the job function ----------------------------------------------------------------------

def misaligned(image: dict[str, Any], motion: dict[str, Any], rej: RejectConfig) -> bool:
    """The only hard reject: the motion correlation at the sync offset is at or below
    ``max_motion_corr`` and every image AUC measured (on at least ``min_pairs`` pairs) is
    at or below ``max_image_auc``. Missing evidence never rejects."""
    corr = motion.get("corr")
    aucs = [image[m] for m in ("embedding_auc", "silhouette_auc") if image.get(m) is not None]
    return (corr is not None and corr <= rej.max_motion_corr and (image.get("pairs") or 0) >= rej.min_pairs
            and bool(aucs) and all(a <= rej.max_image_auc for a in aucs))


def _image_part(view: BundleView, event: InFlight, store, config: AlignmentConfig) -> tuple[dict[str, Any], list[Pair]]:
    """The image evidence from the playback pairs the event's playback result names."""
    playback = event.result(PLAYBACK_GATE)
    if playback is None:
        return {"term": None, "reason": "no playback result in the event (the evidence plan runs no "
                                        "'playback' job before 'align')"}, []
    pairs, info = load_pairs(playback, store, config.images.max_png_bytes)
    if pairs:
        ts = view.read(TIMESTAMPS).astype(np.float64)
        poses = joints_at(ts, view.read(JOINT_POS).astype(np.float64), np.array([p.kin_time_ms for p in pairs]))
        image = image_evidence(pairs, poses, config.images) | info
    else:
        image = {"term": None, "reason": "playback stored no keyframe pair with a real frame", **info}
    image["mean_playback_silhouette_iou"] = playback.metrics.get("mean_silhouette_iou")
    return image, pairs


def _vlm_part(vlm, pairs: list[Pair], view: BundleView, config: AlignmentConfig) -> dict[str, Any]:
    if pairs:
        return vlm_evidence(vlm, pairs, view, config)
    return {"status": "not_configured"} if vlm is None else {"status": "skipped", "reason": "no keyframe pairs"}


def _missing_evidence(parts: dict[str, dict[str, Any]], vlm_out: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """``(flags, reasons)`` of the evidence terms and the VLM call that gave nothing."""
    flags: list[str] = []
    reasons: dict[str, str] = {}
    for name, part in parts.items():
        if part.get("term") is None:
            reasons[name] = part.get("reason", "unavailable")
            flags.append(f"{name}_evidence_missing")
    if vlm_out["status"] == "not_configured":
        flags.append("vlm_not_configured")
    elif vlm_out["status"] != "ok":
        flags.append(f"vlm_{vlm_out['status']}")
        reasons["vlm"] = vlm_out.get("error") or vlm_out.get("reason") or vlm_out["status"]
    return flags, reasons


def _vlm_task(vlm_out: dict[str, Any]) -> dict[str, Any]:
    """The task component's inputs from a valid VLM answer (None without one)."""
    answer = vlm_out.get("answer") if vlm_out.get("status") == "ok" else None
    return {"vlm_task_success": answer["task_success"] if answer else None,
            "vlm_task_confidence": vlm_out.get("confidence_used") if answer else None,
            "vlm_phases_observed": answer["phases_observed"] if answer else None}


def combine(parts: dict[str, dict[str, Any]], vlm_out: dict[str, Any], config: AlignmentConfig) -> dict[str, Any]:
    """``s_evidence`` (the weighted mean of the available terms, ``combine.weights``) and
    ``s_align`` (the VLM's term blended in with its weight; see the module docstring)."""
    w = config.combine.weights.model_dump()
    avail = {k: part["term"] for k, part in parts.items() if part.get("term") is not None and w[k] > 0}
    s_evidence = sum(w[k] * v for k, v in avail.items()) / sum(w[k] for k in avail) if avail else None
    vlm_term, vlm_w = vlm_out.get("term"), vlm_out.get("weight", 0.0)
    if s_evidence is not None and vlm_term is not None:
        s_align = (1.0 - vlm_w) * s_evidence + vlm_w * vlm_term
    elif vlm_term is not None:
        s_align = vlm_term
    else:
        s_align = s_evidence
    return {"applicable": s_align is not None, "s_align": _r(s_align), "s_evidence": _r(s_evidence),
            "basis": sorted(avail) + (["vlm"] if vlm_term is not None else []),
            "terms": {**{k: part.get("term") for k, part in parts.items()}, "vlm": vlm_term}}


def check_alignment(view: BundleView, event: InFlight | Mapping[str, Any], store, config: AlignmentConfig,
                    vlm=None, sync_trusted: float | None = None) -> GateResult:
    """Alignment evidence of one submission (gate ``alignment``; see the module docstring):
    the image, motion, secondary-camera and VLM evidence, ``combine``d, then the hard
    rejects (``misaligned``, ``mismatch_findings``).

    :param event: the in-flight event (``streams.in_flight.InFlight``, or its record): the
        playback result (``event.result("playback")``) and the sync estimate
        (``event.sync_offset()``).
    :param store: object store holding the playback pairs (``read_bytes``).
    :param config: the alignment config (``kibotos.config.alignment``).
    :param vlm: a ``kibotos.vlm`` provider, or None (no VLM configured).
    :param sync_trusted: gate C's ``high_confidence`` of the gate config in use (default:
        the packaged one): from it on, gate C's offset estimate is used over the claim.
    """
    event = InFlight.from_record(event)
    offset_ms = event.sync_offset(sync_trusted)
    thresholds = config.model_dump(mode="json", exclude={"vlm": {"calibration"}})

    image, pairs = _image_part(view, event, store, config)
    motion = motion_evidence(view, offset_ms, config.motion)
    secondary = secondary_evidence(view, offset_ms, config)
    vlm_out = _vlm_part(vlm, pairs, view, config)
    parts = {"image": image, "motion": motion}  # the evidence terms ``combine`` weighs

    metrics: dict[str, Any] = {
        "config_version": config.config_version,
        "image": {k: v for k, v in image.items() if k != "keyframes"}, "motion": motion, "vlm": vlm_out,
        "secondary_cameras": secondary,
        "angle_quality_sum": _r(sum(cam["quality"] for cam in secondary.values())),
    }
    flags = sorted({flag for cam in secondary.values() for flag in cam["flags"]})
    if image.get("keyframes"):
        metrics["keyframes"] = image["keyframes"]
    missing_flags, reasons = _missing_evidence(parts, vlm_out)
    flags += missing_flags
    metrics |= _vlm_task(vlm_out)
    metrics |= combine(parts, vlm_out, config) | {"reasons": reasons}
    if not metrics["applicable"]:
        metrics["reason"] = "no alignment evidence: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())

    findings, mismatch = mismatch_findings(view, offset_ms, config)
    metrics["mismatch"] = mismatch
    if misaligned(image, motion, config.reject):
        return GateResult(gate=GATE_ID, passed=False, metrics=metrics, thresholds=thresholds, flags=flags,
                          reason_code=REJECT_CODE)
    if findings:
        return GateResult(gate=GATE_ID, passed=False, metrics=metrics, thresholds=thresholds, flags=flags,
                          reason_code=MISMATCH_CODE)
    return GateResult(gate=GATE_ID, passed=True, metrics=metrics, thresholds=thresholds, flags=flags)
