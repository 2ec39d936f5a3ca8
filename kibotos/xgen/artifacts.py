"""Stage outputs as object-store artifacts: what one XGen job hands the next.

Events carry only URIs (``xgen_in_flight.artifacts``); the arrays go to the object store
as ``.npz`` files (no pickle), one per stage output, under ``xgen/<request_id>/``::

    xgen/<request_id>/
    ├── source.<ext>               the uploaded video or keypoints file (ingest)
    ├── pose.npz                   HumanMotion: keypoints (T,33,3), confidence (T,33), fps
    ├── retarget.npz               RobotMotion: qpos (T,36), residual, planted, fps
    ├── interaction.npz            InteractionClip (the base clip)
    ├── variants/<i>.npz           InteractionClip of augment variant i (+ its params)
    └── clips/<clip_id>/           clip.npz, metadata.json, preview.mp4 (export)

Each reader checks what it reads and raises ``XGenError xgen_artifact_invalid``, so a
missing or damaged artifact is a reason code, never a crash.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from kibotos.xgen.interaction import Hold, InteractionClip
from kibotos.xgen.result import XGenError
from kibotos.xgen.retarget import RobotMotion
from kibotos.xgen.skeleton import HumanMotion, validate_motion

MAX_ARTIFACT_BYTES = 512 << 20


def prefix(request_id: str) -> str:
    return f"xgen/{request_id}"


def _dump(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    # numpy's stub lets **kwds fall on allow_pickle (bool); every key here names an array
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def _load(data: bytes, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz]
            if missing:
                raise XGenError(f"{what} artifact lacks {', '.join(missing)}", reason_code="xgen_artifact_invalid")
            return {k: npz[k] for k in npz.files}
    except XGenError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise XGenError(f"{what} artifact unreadable: {exc}", reason_code="xgen_artifact_invalid") from exc


def dump_motion(m: HumanMotion) -> bytes:
    return _dump(keypoints=m.keypoints, confidence=m.confidence, fps=np.float64(m.fps), source=np.str_(m.source))


def load_motion(data: bytes) -> HumanMotion:
    a = _load(data, "pose", ("keypoints", "confidence", "fps"))
    return validate_motion(a["keypoints"], a["confidence"], float(a["fps"]), source=str(a.get("source", "keypoints")))


def dump_robot(r: RobotMotion) -> bytes:
    return _dump(qpos=r.qpos, fps=np.float64(r.fps), residual=r.residual, planted=r.planted)


def load_robot(data: bytes) -> RobotMotion:
    a = _load(data, "retarget", ("qpos", "fps", "residual", "planted"))
    qpos = np.asarray(a["qpos"], float)
    if qpos.ndim != 2 or qpos.shape[1] != 36 or not np.isfinite(qpos).all():
        raise XGenError(f"retarget artifact qpos must be finite (T, 36), got {qpos.shape}",
                        reason_code="xgen_artifact_invalid")
    return RobotMotion(qpos=qpos, fps=float(a["fps"]), residual=a["residual"], planted=a["planted"].astype(bool))


def dump_clip(c: InteractionClip, params: dict[str, Any] | None = None) -> bytes:
    h = c.hold
    return _dump(qpos=c.qpos, fps=np.float64(c.fps), object_pose=c.object_pose, box_size=c.box_size,
                 mass_kg=np.float64(c.mass_kg), phase=c.phase, contact=c.contact, anchors=c.anchors,
                 hold=np.array([h.start, h.lift, h.carry, h.place, h.end], dtype=np.int64),
                 annotation_json=np.str_(json.dumps(c.annotation, sort_keys=True, default=str)),
                 params_json=np.str_(json.dumps(params or {}, sort_keys=True, default=str)))


def load_clip(data: bytes) -> tuple[InteractionClip, dict[str, Any]]:
    """The clip and the augmentation parameters stored with it."""
    a = _load(data, "clip", ("qpos", "fps", "object_pose", "box_size", "mass_kg", "phase", "contact", "anchors",
                             "hold"))
    qpos, box = np.asarray(a["qpos"], float), np.asarray(a["object_pose"], float)
    if qpos.ndim != 2 or qpos.shape[1] != 36 or box.shape != (len(qpos), 7) or len(a["phase"]) != len(qpos):
        raise XGenError(f"clip artifact shapes disagree: qpos {qpos.shape}, object_pose {box.shape}",
                        reason_code="xgen_artifact_invalid")
    try:
        annotation = json.loads(str(a.get("annotation_json", "{}")))
        params = json.loads(str(a.get("params_json", "{}")))
    except ValueError as exc:
        raise XGenError(f"clip artifact metadata is not JSON: {exc}", reason_code="xgen_artifact_invalid") from exc
    clip = InteractionClip(qpos=qpos, fps=float(a["fps"]), object_pose=box, box_size=np.asarray(a["box_size"], float),
                           mass_kg=float(a["mass_kg"]), phase=a["phase"], contact=a["contact"],
                           anchors=np.asarray(a["anchors"], float), hold=Hold(*(int(v) for v in a["hold"])),
                           annotation=annotation)
    return clip, params
