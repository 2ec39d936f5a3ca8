"""Write a bundle (zip or directory store) following the layout in ``kibotos.bundle``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from kibotos.bundle.reader import (
    JOINT_POS,
    JOINT_VEL,
    SECONDARY_PREFIX,
    TIMESTAMPS,
    VIDEO_ENCODED,
    VIDEO_FRAMES,
    video_paths,
)


def write_bundle(
    path: str | Path,
    manifest: Mapping[str, Any],
    *,
    timestamps_ms: np.ndarray,
    joint_pos: np.ndarray,
    joint_vel: np.ndarray | None = None,
    video_mp4: bytes | None = None,
    video_frames: np.ndarray | None = None,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
    array_attributes: Mapping[str, Mapping[str, Any]] | None = None,
    secondary_mp4: Mapping[str, bytes] | None = None,
) -> Path:
    """Write one episode. ``path`` ending in ``.zip`` gives a zip store, else a directory.

    Arrays are written with the dtypes given (the contract asks int64 timestamps and
    float32 joints; callers that want a faulty bundle may pass anything). Attributes are
    set at creation time because zip stores cannot rewrite ``zarr.json`` in place:
    ``array_attributes`` maps an array path (e.g. ``objects/cube/pose``) to its attributes.
    ``secondary_mp4`` maps a secondary camera's key (``secondary_<name>``, as in the
    manifest) to its mp4 file, written as ``video/secondary_<name>/encoded``.
    """
    for camera in secondary_mp4 or {}:
        if not camera.startswith(SECONDARY_PREFIX) or camera == SECONDARY_PREFIX:
            raise ValueError(f"secondary camera keys are '{SECONDARY_PREFIX}<name>', got {camera!r}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = zarr.storage.ZipStore(path, mode="w") if path.suffix == ".zip" else zarr.storage.LocalStore(path)
    try:
        root = zarr.open_group(store=store, mode="w")
        root.create_group("manifest", attributes=dict(manifest))
        arrays: dict[str, np.ndarray] = {TIMESTAMPS: timestamps_ms, JOINT_POS: joint_pos}
        if joint_vel is not None:
            arrays[JOINT_VEL] = joint_vel
        if video_frames is not None:
            arrays[VIDEO_FRAMES] = video_frames
        arrays.update(extra_arrays or {})
        attributes = {name: dict(attrs) for name, attrs in (array_attributes or {}).items()}
        for name, data in arrays.items():
            data = np.asarray(data)
            root.create_array(name, data=data, chunks=data.shape or "auto", attributes=attributes.get(name))
        encoded = {VIDEO_ENCODED: video_mp4} if video_mp4 is not None else {}
        encoded |= {video_paths(camera)[0]: data for camera, data in (secondary_mp4 or {}).items()}
        for name, mp4 in encoded.items():
            buf = np.frombuffer(mp4, dtype=np.uint8)
            root.create_array(name, data=buf, chunks=(max(len(buf), 1),),
                              attributes={"container": "mp4", "codec": "h264"})
    finally:
        store.close()
    return path
