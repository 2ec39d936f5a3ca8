"""Export to the LeRobot dataset format v3.0 (``codebase_version: v3.0``).

Layout of one LeRobot dataset (LeRobot's documented v3 layout)::

    meta/info.json                       fps, features, paths, totals, robot_type
    meta/stats.json                      per-feature min/max/mean/std/count
    meta/tasks.parquet                   task_index, task
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, data and
                                         video file indices, timestamps range
    data/chunk-000/file-000.parquet      one row per frame: observation.state, action,
                                         [observation.velocity], timestamp, frame_index,
                                         episode_index, index, task_index
    videos/observation.images.primary/chunk-000/file-000.mp4

LeRobot has one rate for rows and video and fixed feature shapes, so a dataset version is
exported as one LeRobot dataset per (robot, fps, resolution) group, under
``lerobot/<robot>-<fps>fps-<W>x<H>/``. A row per video frame: joint positions
(``observation.state``) and velocities at each frame's time on the kinematic clock
(``t_frame - claimed sync offset``, linearly interpolated, held at the ends);
``action`` is the next row's position (a bundle has no separate command stream). Each
episode's mp4 is copied as is into a file of its own (``from_timestamp`` 0), data rows
roll over to a new parquet file every ``episodes_per_data_file`` episodes.

Kibotos adds ``meta/kibotos/episodes.jsonl``: per ``episode_index`` the dataset episode
(submission id, miner, reward, S and components, soft flags, evidence URIs, attribution).

Writing streams: one episode is in memory at a time; stats are running sums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kibotos.export.bundle_frames import BundleEpisode, ExportError, interp_rows, read_bundle

VIDEO_KEY = "observation.images.primary"
CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


def video_info(mp4: Path | bytes) -> tuple[int, int, str]:
    """(width, height, codec) of an mp4 file or its bytes."""
    import io

    import av

    with av.open(io.BytesIO(mp4) if isinstance(mp4, bytes) else str(mp4)) as container:
        cc = container.streams.video[0].codec_context
        return cc.width, cc.height, cc.name


def frame_columns(ep: BundleEpisode) -> dict[str, np.ndarray]:
    t = ep.frame_times_kin()
    state = interp_rows(t, ep.timestamps_ms, ep.joint_pos).astype(np.float32)
    cols = {"observation.state": state, "action": np.concatenate([state[1:], state[-1:]])}
    if ep.joint_vel is not None:
        cols["observation.velocity"] = interp_rows(t, ep.timestamps_ms, ep.joint_vel).astype(np.float32)
    return cols


class RunningStats:
    def __init__(self, dim: int):
        self.n = 0
        self.s = np.zeros(dim)
        self.ss = np.zeros(dim)
        self.lo = np.full(dim, np.inf)
        self.hi = np.full(dim, -np.inf)

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.n += len(x)
        self.s += x.sum(0)
        self.ss += (x * x).sum(0)
        self.lo = np.minimum(self.lo, x.min(0))
        self.hi = np.maximum(self.hi, x.max(0))

    def as_dict(self) -> dict:
        mean = self.s / max(self.n, 1)
        std = np.sqrt(np.maximum(self.ss / max(self.n, 1) - mean * mean, 0.0))
        return {"min": self.lo.tolist(), "max": self.hi.tolist(), "mean": mean.tolist(), "std": std.tolist(),
                "count": [self.n]}


@dataclass
class LeRobotWriter:
    """One LeRobot v3.0 dataset, written episode by episode."""

    root: Path
    robot_type: str
    fps: int
    joint_names: list[str]
    width: int
    height: int
    codec: str
    has_velocity: bool
    episodes_per_data_file: int = 100
    episodes: int = 0
    frames: int = 0
    tasks: dict[str, int] = field(default_factory=dict)
    _data_writer: Any = None  # a pyarrow ParquetWriter (pyarrow ships no types)
    _data_file: int = -1
    _episode_rows: list = field(default_factory=list)
    _episodes_writer: Any = None  # a pyarrow ParquetWriter
    _stats: dict = field(default_factory=dict)
    _extras: Any = None  # the text file opened in __post_init__

    def __post_init__(self) -> None:
        (self.root / "meta/kibotos").mkdir(parents=True, exist_ok=True)
        self._extras = open(self.root / "meta/kibotos/episodes.jsonl", "w", encoding="utf-8")
        keys = ["observation.state", "action"] + (["observation.velocity"] if self.has_velocity else [])
        self._stats = {k: RunningStats(len(self.joint_names)) for k in keys}

    def _data_path(self, file_index: int) -> Path:
        return self.root / DATA_PATH.format(chunk_index=file_index // CHUNKS_SIZE, file_index=file_index % CHUNKS_SIZE)

    def add(self, ep: BundleEpisode, kibotos_line: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if ep.mp4 is None:
            raise ExportError("LeRobot export needs the encoded primary video")
        cols = frame_columns(ep)
        if not self.has_velocity:
            cols.pop("observation.velocity", None)
        elif "observation.velocity" not in cols:  # derived like gate A does when a bundle has none
            cols["observation.velocity"] = np.gradient(cols["observation.state"], 1.0 / self.fps, axis=0).astype(
                np.float32) if len(cols["observation.state"]) > 1 else np.zeros_like(cols["observation.state"])
        n = len(cols["observation.state"])
        k = self.episodes
        task_index = self.tasks.setdefault(ep.task, len(self.tasks))
        file_index = k // self.episodes_per_data_file
        if file_index != self._data_file:
            if self._data_writer is not None:
                self._data_writer.close()
            self._data_path(file_index).parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = None
            self._data_file = file_index

        def fixed(a: np.ndarray) -> pa.Array:
            return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), a.shape[1])

        table = pa.table({key: fixed(v) for key, v in cols.items()} | {
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / np.float32(self.fps)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, k, np.int64)),
            "index": pa.array(np.arange(self.frames, self.frames + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, task_index, np.int64))})
        if self._data_writer is None:
            self._data_writer = pq.ParquetWriter(self._data_path(file_index), table.schema)
        self._data_writer.write_table(table)
        for key, v in cols.items():
            self._stats[key].add(v)
        video_rel = VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=k // CHUNKS_SIZE, file_index=k % CHUNKS_SIZE)
        (self.root / video_rel).parent.mkdir(parents=True, exist_ok=True)
        (self.root / video_rel).write_bytes(ep.mp4)
        self._episode_rows.append({
            "episode_index": k, "tasks": [ep.task], "length": n,
            "data/chunk_index": file_index // CHUNKS_SIZE, "data/file_index": file_index % CHUNKS_SIZE,
            "dataset_from_index": self.frames, "dataset_to_index": self.frames + n,
            f"videos/{VIDEO_KEY}/chunk_index": k // CHUNKS_SIZE, f"videos/{VIDEO_KEY}/file_index": k % CHUNKS_SIZE,
            f"videos/{VIDEO_KEY}/from_timestamp": 0.0, f"videos/{VIDEO_KEY}/to_timestamp": n / self.fps,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        if len(self._episode_rows) >= 256:
            self._flush_episode_rows()
        self._extras.write(json.dumps({"episode_index": k, **json.loads(kibotos_line)}, sort_keys=True) + "\n")
        self.episodes += 1
        self.frames += n

    def _flush_episode_rows(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._episode_rows:
            return
        table = pa.Table.from_pylist(self._episode_rows)
        if self._episodes_writer is None:
            path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._episodes_writer = pq.ParquetWriter(path, table.schema)
        self._episodes_writer.write_table(table)
        self._episode_rows = []

    def close(self) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._data_writer is not None:
            self._data_writer.close()
        self._flush_episode_rows()
        if self._episodes_writer is not None:
            self._episodes_writer.close()
        self._extras.close()
        pq.write_table(pa.table({"task_index": list(self.tasks.values()), "task": list(self.tasks)}),
                       self.root / "meta/tasks.parquet")
        (self.root / "meta/stats.json").write_text(json.dumps({k: s.as_dict() for k, s in self._stats.items()},
                                                              sort_keys=True))
        features: dict[str, dict[str, Any]] = {k: {"dtype": "float32", "shape": [len(self.joint_names)], "names": list(self.joint_names)}
                    for k in self._stats}
        features[VIDEO_KEY] = {
            "dtype": "video", "shape": [self.height, self.width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": self.height, "video.width": self.width, "video.codec": self.codec,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                     "video.channels": 3, "has_audio": False}}
        for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                            ("index", "int64"), ("task_index", "int64")):
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": self.episodes, "total_frames": self.frames, "total_tasks": len(self.tasks),
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                "fps": self.fps, "splits": {"train": f"0:{self.episodes}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}
        (self.root / "meta/info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        return {"root": str(self.root), "episodes": self.episodes, "frames": self.frames}


def bundle_to_lerobot(bundle: Path, root: Path, kibotos_line: str = "{}") -> Path:
    """One bundle as a one-episode LeRobot v3.0 dataset under ``root`` (what
    ``kibotos bench pipeline`` hands to lerobot-doctor)."""
    ep = read_bundle(bundle)
    fps = ep.fps
    if fps != round(fps):
        raise ExportError(f"LeRobot datasets declare an integer fps; the video has {fps}")
    if ep.mp4 is None:
        raise ExportError("LeRobot export needs the encoded primary video")
    root.mkdir(parents=True, exist_ok=True)
    w, h, codec = video_info(ep.mp4)
    writer = LeRobotWriter(root, ep.robot_model_id, int(round(fps)), ep.joint_names, w, h, codec,
                           ep.joint_vel is not None)
    writer.add(ep, kibotos_line)
    writer.close()
    return root
