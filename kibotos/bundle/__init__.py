"""The submission bundle: a Zarr v3 archive (zip store, or a directory store).

Layout (a public contract — external tools write these files)::

    episode.zarr.zip
    ├── manifest/                 group; its attributes ARE the manifest (one JSON object)
    │     schema_version, bundle_version, submission_id, episode_id, miner_id,
    │     created_at, robot_model_id, robot_model_revision, joint_names[J],
    │     sampling_rate_hz, time_base="relative", time_units="ms",
    │     units{joint_pos="rad", joint_vel="rad/s"},
    │     camera{primary{intrinsics{fx,fy,cx,cy,width,height,distortion?},
    │                    extrinsics[4][4]  (camera-to-world, world = robot base frame)}},
    │     video{primary{fps, frame_count}}, sync{sync_offset_ms_claimed},
    │     task{task_id, task_version}?
    ├── kinematics/
    │   ├── timestamps_ms         int64   (T,)     strictly increasing, relative
    │   ├── joint_pos             float32 (T, J)   radians (metres for prismatic joints)
    │   └── joint_vel             float32 (T, J)   rad/s — optional
    ├── video/
    │   ├── primary/
    │   │   ├── encoded           uint8   (bytes,) an mp4 file; attrs {container, codec}
    │   │   └── frames            uint8   (N, H, W, C) — alternative to `encoded`
    │   └── secondary_<name>/...  optional, same layout
    ├── objects/<name>/{timestamps_ms (T,), pose (T, 7): x,y,z,qw,qx,qy,qz}   optional
    └── imu/*, torques/*, contacts/*, pose/*                                 optional

Sync convention: ``sync_offset_ms`` is the video time (ms after the first video frame)
at which kinematic time 0 (``timestamps_ms[0]``) happens, so
``t_video = (t_kin - timestamps_ms[0]) + sync_offset_ms``.
"""

from kibotos.bundle.reader import BundleView, Limits, open_bundle
from kibotos.bundle.writer import write_bundle

__all__ = ["BundleView", "Limits", "open_bundle", "write_bundle"]
