"""Gate C's decode budget: what a video may cost is bounded by what the manifest declares
(durations, frame count) before and while decoding, and the time budgets are checked on
every packet and frame the decoder handles."""

from __future__ import annotations

import numpy as np
import pytest

from kibotos.bundle.limits import Limits, ResourceLimitExceeded, gate_deadline
from kibotos.media.video import decode_luma
from kibotos.robots import get_robot, list_robots
from kibotos.synthetic.samples import make_episode
from processors.gate_c_sync import GATE_ID
from tests.fixtures.episodes import run_gate_on
from tests.fixtures.hostile import big_black_mp4, edit_manifest, with_video


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    robot = get_robot("ur5", dict(list_robots())["ur5"])
    ep = make_episode(robot, "genuine", seed=5, miner_id="miner-budget", duration_ms=3000)
    return ep, ep.write(tmp_path_factory.mktemp("gate_c_budget") / "genuine.zarr.zip")


def test_a_video_far_longer_than_its_episode_is_refused_before_decoding(episode, tmp_path):
    """The overlap can never reach the bound when the declared durations differ this
    much: refused as insufficient_overlap without decoding (the stream here is not even
    a video: decoding it would say video_unreadable)."""
    ep, path = episode
    video = ep.manifest["video"]["primary"]
    garbage = with_video(lambda: bytes(range(256)) * 64)(path, tmp_path / "garbage.zarr.zip")
    long = edit_manifest(lambda a: a["video"]["primary"].update(frame_count=video["frame_count"] * 10))(
        garbage, tmp_path / "long.zarr.zip")
    res = run_gate_on(GATE_ID, long)
    assert (res.passed, res.reason_code) == (False, "insufficient_overlap"), res.metrics
    assert res.metrics["decoded"] is False and res.metrics["overlap_fraction_bound"] < 0.2
    # the same garbage with honest durations is decoded, and fails as a video
    assert run_gate_on(GATE_ID, garbage).reason_code == "video_unreadable"


def test_a_stream_longer_than_it_declares_stops_decoding_at_the_tolerance(episode, tmp_path):
    ep, path = episode
    declared = ep.manifest["video"]["primary"]["frame_count"]
    fps = int(round(ep.manifest["video"]["primary"]["fps"]))
    longer = with_video(lambda: big_black_mp4(64, 64, declared * 4, fps=fps))(path, tmp_path / "longer.zarr.zip")
    res = run_gate_on(GATE_ID, longer)
    assert (res.passed, res.reason_code) == (False, "video_frame_count_mismatch"), res.metrics
    stop = declared + 2 + 1  # the tolerance (2 frames for this short episode), then one more
    assert res.metrics["decode_stopped_at_frames"] == stop
    # a stream within the tolerance is decoded whole
    near = with_video(lambda: big_black_mp4(64, 64, declared + 1, fps=fps))(path, tmp_path / "near.zarr.zip")
    assert run_gate_on(GATE_ID, near).metrics["frame_count_decoded"] == declared + 1


def test_time_budgets_are_checked_before_the_first_frame_comes_out():
    """Per packet, not every 16 frames: a budget already spent stops the decode at the
    first packet, and the gate's deadline likewise."""
    mp4 = big_black_mp4(64, 64, 40)
    with gate_deadline(60, Limits(max_decode_seconds=0.0)), pytest.raises(ResourceLimitExceeded) as exc:
        decode_luma(mp4)
    assert exc.value.limit == "max_decode_seconds" and "(0 frames, 1 packets)" in str(exc.value)
    with gate_deadline(0.0), pytest.raises(ResourceLimitExceeded) as exc:
        decode_luma(mp4)
    assert exc.value.limit == "gate_time_budget_s"
    # with room in both budgets every frame comes out
    with gate_deadline(60):
        frames = decode_luma(mp4).frames
    assert frames.shape[0] == 40 and np.all(frames == frames[0])
