"""``kibotos bench xgen --parts``: the pose stage measured against a bare decode of the same
generated video (a smoke run of 1 s at 10 fps; no absolute timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks.xgen import bench_pose_vs_decode


def test_pose_stage_costs_more_than_decoding_the_same_video():
    pytest.importorskip("mediapipe", reason="the pose stage needs mediapipe==0.10.21 (installed --no-deps)")
    result = bench_pose_vs_decode(duration_s=1.0, fps=10.0)
    assert result["frames"] == 10
    # the stage decodes the same file and then estimates landmarks on every frame
    assert result["pose_stage_s"] > result["decode_s"] > 0
    assert result["vs_decode"] > 1.0 and result["pose_frames_per_s"] > 0
