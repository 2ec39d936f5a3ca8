"""The submission bundle: a Zarr v3 archive (zip store, or a directory store).

Layout (a public contract — external tools write these files)::

    episode.zarr.zip
    ├── manifest/                 group; its attributes ARE the manifest (one JSON object)
    │     schema_version, bundle_version, submission_id, episode_id, miner_id,
    │     created_at, robot_model_id, robot_model_revision, joint_names[J],
    │     sampling_rate_hz, time_base="relative", time_units="ms",
    │     units{joint_pos="rad", joint_vel="rad/s"},
    │     camera{primary{intrinsics{fx,fy,cx,cy,width,height,distortion?},
    │                    extrinsics[4][4]  (camera-to-world, world = robot base frame)},
    │            secondary_<name>?{intrinsics, extrinsics}},
    │     video{primary{fps, frame_count, subject?="human"|"robot" (default "human")},
    │           secondary_<name>?{fps, frame_count, subject?}},
    │     sync{sync_offset_ms_claimed},
    │     task{task_id, task_version, waypoints?[{t_ms, link, pose[7]}]}?
    ├── kinematics/
    │   ├── timestamps_ms         int64   (T,)     strictly increasing, relative
    │   ├── joint_pos             float32 (T, J)   radians (metres for prismatic joints)
    │   └── joint_vel             float32 (T, J)   rad/s — optional
    ├── video/
    │   ├── primary/
    │   │   ├── encoded           uint8   (bytes,) an mp4 file; attrs {container, codec}
    │   │   └── frames            uint8   (N, H, W, C) — alternative to `encoded`
    │   └── secondary_<name>/     optional, any number, same layout as primary
    ├── objects/<name>/                                          optional
    │   ├── timestamps_ms         int64   (T_o,)   kinematic clock, strictly increasing
    │   └── pose                  float   (T_o, 7) x,y,z,qw,qx,qy,qz in the robot base frame;
    │                             attrs {grasp?: {link, offset[7]: pose of `link` in the object frame}}
    ├── contacts/<link>           uint8   (T_o,) or (T,)  1 = `link` holds the object   optional
    └── imu/*, torques/*, pose/*                                             optional

``video.primary.subject`` says what the primary video shows: a human demonstrator
(gate F estimates their pose) or the robot itself. An object stream with a ``grasp``
declaration is the IK residual stage's independent end-effector target
(``gpu_consumers.ik``); ``contacts/<link>`` marks the grasped samples, on the object's
timestamps (T_o) or the kinematics' (T).

Sync convention: ``sync_offset_ms`` is the video time (ms after the first video frame)
at which kinematic time 0 (``timestamps_ms[0]``) happens, so
``t_video = (t_kin - timestamps_ms[0]) + sync_offset_ms``.

Secondary cameras: each ``video/secondary_<name>`` stream comes with its manifest entries
``camera.secondary_<name>`` and ``video.secondary_<name>``, and shares the primary video's
clock (its first frame is at the primary's first frame; the one sync offset applies).
They are optional: gate A checks them without requiring them, the align job measures
each one's quality for the reward's multi-angle multiplier
(``gpu_consumers.alignment``).

Integrity: ``kibotos.bundle.hashtree`` hashes every node above (one hash per array, per
attribute set) into the Merkle root that miners sign (``kibotos.identity``).
"""

from kibotos.bundle.reader import BundleView, Limits, open_bundle
from kibotos.bundle.writer import write_bundle

__all__ = ["BundleView", "Limits", "open_bundle", "write_bundle"]
