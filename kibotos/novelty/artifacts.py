"""Synthetic-artifact heuristics on the primary video (design §11).

Each cue is a strength in [0, 1] with the measurements behind it; ``artifact_score`` is
``1 - prod(1 - weight_i * strength_i)`` over the cues (weights in the novelty config),
so one weak cue moves it little and several strong ones push it towards 1. The score
lowers ``s_novel``; only an extreme score is a hard reject.

=====================  ==============================================================
cue                    evidence
=====================  ==============================================================
``static_overlay``     a compact high-contrast region of strong edges that stays
                       constant across the sampled frames while the rest of the frame
                       changes, inside a border strip (where logos, watermarks and
                       timestamps sit) or anywhere when the camera itself moves
``screen_recapture``   isolated peaks in the 2-D spectrum of full-resolution frames away
                       from the axes and from codec block frequencies: moiré of a
                       filmed or re-sampled screen
``double_compression`` periodic spikes in the sizes of inter frames at a period other
                       than the stream's own GOP: the GOP of an earlier encoding
``encoder_signature``  container/stream tags of screen recorders, editors or renderers
``intra_only``         every frame an I frame (editing / intermediate codecs, renders)
``duplicated_frames``  many non-key packets that are empty-sized: frames identical to
                       their predecessor (no sensor noise: rendered, or frame-rate
                       converted)
=====================  ==============================================================

They are heuristics with known blind spots (a fixed camera filming a static high-contrast
sign near the frame edge looks like an overlay), hence soft scores, each reported.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from kibotos.novelty.config import ArtifactsConfig
from kibotos.novelty.scan import VideoScan


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def overlay_cue(grey: np.ndarray, cfg: ArtifactsConfig) -> dict:
    """Static overlay / watermark detection on downsized grey frames ``(M, h, w)``."""
    oc = cfg.overlay
    if len(grey) < 4:
        return {"applicable": False, "reason": "fewer than 4 sampled frames", "strength": 0.0}
    idx = np.linspace(0, len(grey) - 1, min(oc.frames, len(grey))).round().astype(int)
    frames = grey[idx].astype(np.float32)
    h, w = frames.shape[1:]
    std = frames.std(axis=0)
    median = np.median(frames, axis=0)
    moving_fraction = float((std > oc.moving_std).mean())
    if moving_fraction < oc.min_moving_fraction:
        return {"applicable": False, "reason": "the video does not change", "moving_fraction": _r(moving_fraction),
                "strength": 0.0}
    edges = np.hypot(cv2.Sobel(median, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(median, cv2.CV_32F, 0, 1, ksize=3))
    static_edges = ((std < oc.static_std) & (edges > oc.edge_threshold)).astype(np.uint8)
    # strokes of one logo or line of text merge into one component
    grown = cv2.dilate(static_edges, np.ones((7, 7), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    camera_moves = moving_fraction >= oc.camera_motion_fraction
    band_x, band_y = oc.border_band * w, oc.border_band * h
    best: dict | None = None
    for k in range(1, count):
        x, y, bw, bh, _ = (int(v) for v in stats[k])
        area = bw * bh / (w * h)
        if not oc.min_area_fraction <= area <= oc.max_area_fraction:
            continue
        box_edges = static_edges[y: y + bh, x: x + bw]
        density = float(box_edges.mean())
        values = median[y: y + bh, x: x + bw]
        contrast = float(np.percentile(values, 95) - np.percentile(values, 5))
        in_band = (y + bh <= band_y or y >= h - band_y or x + bw <= band_x or x >= w - band_x)
        if density < oc.min_edge_density or contrast < oc.min_contrast or not (in_band or camera_moves):
            continue
        candidate = {"box": [_r(x / w), _r(y / h), _r(bw / w), _r(bh / h)], "area_fraction": _r(area),
                     "edge_density": _r(density), "contrast": _r(contrast, 1), "in_border_band": bool(in_band)}
        if best is None or density * area > best["edge_density"] * best["area_fraction"]:
            best = candidate
    return {"applicable": True, "moving_fraction": _r(moving_fraction), "camera_moves": bool(camera_moves),
            "overlay": best, "strength": 1.0 if best is not None else 0.0}


def _block_mask(n: int, guard_bins: int) -> np.ndarray:
    """True at the frequencies (cycles/pixel, fftshift order) more than ``guard_bins``
    bins away from the codec block grid k/16, which includes the axis (k = 0)."""
    f = np.fft.fftshift(np.fft.fftfreq(n))
    grid = np.arange(-8, 9) / 16.0
    return np.min(np.abs(f[:, None] - grid[None, :]), axis=1) > (guard_bins + 0.5) / n


def recapture_cue(full_grey: list[np.ndarray], cfg: ArtifactsConfig) -> dict:
    """Moiré: the strongest isolated spectral peak per frame, as a ratio to its
    neighbourhood; the median over frames (moiré persists, content peaks do not)."""
    rc = cfg.recapture
    if not full_grey:
        return {"applicable": False, "reason": "no frames", "strength": 0.0}
    ratios, where = [], []
    for frame in full_grey:
        f = frame.astype(np.float32)
        h, w = f.shape
        if min(h, w) < 32:
            continue
        window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
        mag = np.abs(np.fft.fftshift(np.fft.fft2((f - f.mean()) * window))).astype(np.float32)
        logmag = np.log1p(mag)
        # neighbourhood level without the peak itself: box mean minus the centre
        k = 15
        local = (cv2.blur(logmag, (k, k)) * k * k - logmag) / (k * k - 1)
        fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w)), indexing="ij")
        mask = (np.hypot(fx, fy) >= rc.min_radius) & _block_mask(h, rc.block_guard_bins)[:, None] \
            & _block_mask(w, rc.block_guard_bins)[None, :]
        if not mask.any():
            continue
        excess = np.where(mask, logmag - local, -np.inf)
        i = int(np.argmax(excess))
        ratios.append(float(np.exp(excess.flat[i])))
        where.append([_r(fx.flat[i], 3), _r(fy.flat[i], 3)])
    if not ratios:
        return {"applicable": False, "reason": "frames too small", "strength": 0.0}
    ratio = float(np.median(ratios))
    strength = float(np.clip((ratio - rc.peak_ratio) / rc.peak_ratio, 0.0, 1.0)) if ratio > rc.peak_ratio else 0.0
    return {"applicable": True, "peak_ratio": _r(ratio, 2), "peak_frequency": where[int(np.argmax(ratios))],
            "strength": _r(strength)}


def double_compression_cue(scan: VideoScan, cfg: ArtifactsConfig) -> dict:
    """Periodic spikes in inter-frame sizes at a period other than the stream's own GOP.

    Each P and B frame's log size is taken relative to the running median of its own
    type (which removes the P/B pattern and slow changes of content); an earlier
    encoding's key frames show up as a spectral peak at their period in frames.
    """
    dc = cfg.double_compression
    info = scan.container
    if info is None or len(info.frame_sizes) < dc.min_frames:
        return {"applicable": False, "reason": f"fewer than {dc.min_frames} decoded frames", "strength": 0.0}
    types = np.asarray(info.pict_types[: len(info.frame_sizes)])
    sizes = info.frame_sizes[: len(types)].astype(np.float64)
    residual = np.zeros(len(sizes))
    k = 9
    for kind in ("P", "B"):
        idx = np.flatnonzero((types == kind) & (sizes > 0))
        if len(idx) < k:
            continue
        x = np.log1p(sizes[idx])
        padded = np.pad(x, k // 2, mode="edge")
        trend = np.array([np.median(padded[i: i + k]) for i in range(len(x))])
        residual[idx] = x - trend
    if not residual.any():
        return {"applicable": False, "reason": "no inter frames", "strength": 0.0}
    n = len(residual)
    spec = np.abs(np.fft.rfft((residual - residual.mean()) * np.hanning(n)))
    freqs = np.fft.rfftfreq(n)  # cycles per frame
    keep = (freqs >= 1.0 / dc.max_period) & (freqs <= 1.0 / dc.min_period)
    key_idx = np.flatnonzero(types == "I")
    gop = float(np.median(np.diff(key_idx))) if len(key_idx) > 1 else None
    if gop:
        # the stream's own GOP and its harmonics are expected, not evidence
        for m in range(1, int(gop // dc.min_period) + 2):
            keep &= np.abs(freqs - m / gop) > 1.5 / n
    if not keep.any():
        return {"applicable": False, "reason": "no admissible period", "strength": 0.0}
    level = float(np.median(spec[1:])) or 1e-12
    i = int(np.argmax(np.where(keep, spec, -1.0)))
    ratio = float(spec[i] / level)
    strength = float(np.clip((ratio - dc.peak_ratio) / dc.peak_ratio, 0.0, 1.0)) if ratio > dc.peak_ratio else 0.0
    return {"applicable": True, "frames": n, "gop_frames": gop, "peak_ratio": _r(ratio, 2),
            "period_frames": _r(1.0 / freqs[i], 2) if freqs[i] > 0 else None, "strength": _r(strength)}


def encoder_cue(scan: VideoScan, cfg: ArtifactsConfig) -> dict:
    info = scan.container
    if info is None:
        return {"applicable": False, "reason": "raw frames", "strength": 0.0}
    found = {}
    for key, value in info.metadata.items():
        text = str(value).lower()
        for signature, category in cfg.encoder_signatures.items():
            if re.search(rf"(?<![a-z]){re.escape(signature.lower())}(?![a-z])", text):
                found[signature] = {"category": category, "tag": key}
    tags = {k: v for k, v in info.metadata.items() if k in ("encoder", "stream:encoder", "stream:handler_name")}
    return {"applicable": True, "format": info.format_name, "codec": info.codec, "profile": info.profile,
            "pix_fmt": info.pix_fmt, "tags": tags, "signatures": found, "strength": 1.0 if found else 0.0}


def gop_cue(scan: VideoScan, cfg: ArtifactsConfig) -> dict:
    info = scan.container
    if info is None or not info.pict_types:
        return {"applicable": False, "reason": "no decoded frame types", "strength": 0.0}
    types = info.pict_types
    n = len(types)
    i_count = sum(t == "I" for t in types)
    key_idx = np.flatnonzero(info.packet_key)
    intervals = np.diff(key_idx) if len(key_idx) > 1 else np.zeros(0)
    intra_only = n >= 8 and i_count == n
    return {"applicable": True, "frames": n, "i_fraction": _r(i_count / n), "b_fraction": _r(sum(t == "B" for t in types) / n),
            "keyframe_interval_median": float(np.median(intervals)) if len(intervals) else None,
            "keyframe_interval_cv": _r(intervals.std() / intervals.mean()) if len(intervals) > 1 else None,
            "strength": 1.0 if intra_only else 0.0}


def duplicated_frames_cue(scan: VideoScan, cfg: ArtifactsConfig) -> dict:
    dc = cfg.duplicated_frames
    info = scan.container
    if info is None or len(info.packet_sizes) < 8:
        return {"applicable": False, "reason": "no packet statistics", "strength": 0.0}
    sizes = info.packet_sizes[~info.packet_key]
    if len(sizes) < 4:
        return {"applicable": False, "reason": "too few non-key packets", "strength": 0.0}
    tiny = float((sizes < dc.tiny_packet_fraction * np.percentile(sizes, 90)).mean())
    strength = float(np.clip((tiny - dc.min_fraction) / (1 - dc.min_fraction), 0.0, 1.0))
    return {"applicable": True, "repeat_fraction": _r(tiny), "strength": _r(strength)}


def analyze_artifacts(scan: VideoScan | None, cfg: ArtifactsConfig) -> dict:
    """Every cue on ``scan``, the combined ``artifact_score`` and the flags raised."""
    if scan is None:
        return {"applicable": False, "artifact_score": 0.0, "flags": [], "cues": {}}
    cues = {
        "static_overlay": overlay_cue(scan.grey, cfg),
        "screen_recapture": recapture_cue(scan.full_grey, cfg),
        "double_compression": double_compression_cue(scan, cfg),
        "encoder_signature": encoder_cue(scan, cfg),
        "intra_only": gop_cue(scan, cfg),
        "duplicated_frames": duplicated_frames_cue(scan, cfg),
    }
    keep = 1.0
    flags = []
    for name, cue in cues.items():
        strength = float(cue.get("strength", 0.0))
        keep *= 1.0 - cfg.weights[name] * strength
        if strength > 0:
            flags.append(f"artifact_{name}")
    for found in cues["encoder_signature"].get("signatures", {}).values():
        flags.append(f"encoder_{found['category']}")
    score = _r(1.0 - keep)
    return {"applicable": True, "artifact_score": score, "flags": sorted(set(flags)), "cues": cues}
