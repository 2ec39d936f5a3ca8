"""Genesis previews: the box is drawn where the declared camera sees it, the preview has
one frame per sampled clip frame, and the side-by-side shows the source video's frame of
the same instant. A 12-frame slice of the session clip keeps the render short (the scene
build, ~20-60 s on a loaded CPU, is paid once for the module)."""

from __future__ import annotations

import importlib.util
import json

import av
import numpy as np
import pytest

from kibotos.media.camera import project_points
from kibotos.media.video import encode_mp4
from kibotos.xgen.augment import Variant
from kibotos.xgen.export import ExportRequest, export
from kibotos.xgen.preview import PREVIEW_NAME, SIDE_BY_SIDE_NAME, PreviewRenderer, _sampled, write_preview
from kibotos.xgen.quality import camera_for

W, H = 160, 120


@pytest.fixture(scope="module")
def renderer():
    if importlib.util.find_spec("genesis") is None:
        pytest.skip("genesis-world is not installed")
    r = PreviewRenderer(W, H)
    yield r
    r.close()


@pytest.fixture(scope="module")
def short_clip(clip, xcfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("preview")
    req = ExportRequest(variants=[Variant(clip=clip, params={"kind": "base"})], out_dir=out, source_sha256="cd" * 32,
                        source_kind="keypoints", uploader="tester", task_id="cargo_pickup", task_version="1",
                        annotation={}, stage_metrics={})
    (folder,), _ = export(req, xcfg)
    keep = slice(clip.hold.carry, clip.hold.carry + 12)  # the box is up in the hands
    with np.load(folder / "clip.npz") as z:
        arrays = {k: z[k][keep] for k in z.files}
    np.savez_compressed(folder / "clip.npz", **arrays)
    meta = json.loads((folder / "metadata.json").read_text())
    meta["frames"] = 12
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder, clip.fps, keep.start


def _decode(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_preview_draws_the_box_where_the_camera_sees_it(renderer, short_clip, tmp_path):
    folder, fps, first = short_clip
    # a source video whose brightness says its frame index (the clip's frame t is source frame first + t)
    n_source = first + 12
    source = np.stack([np.full((90, 120, 3), 5 + 8 * (i % 30), np.uint8) for i in range(n_source)])
    with np.load(folder / "clip.npz") as z:
        qpos, box = z["robot_qpos"].astype(float), z["object_pose"].astype(float)
    # the base clip's frame 0 is the source's frame 0: this slice starts at `first`, so
    # hand write_preview the matching part of the source
    cut = tmp_path / "source_cut.mp4"
    cut.write_bytes(encode_mp4(source[first:], fps))
    paths = write_preview(folder, renderer, fps=10.0, source_video=cut)
    assert set(paths) == {PREVIEW_NAME, SIDE_BY_SIDE_NAME}
    frames = _decode(paths[PREVIEW_NAME])
    shown = _sampled(12, fps, 10.0)
    assert frames.shape == (len(shown), H, W, 3)
    intr, cam, _ = camera_for(qpos, box, W, H, 45.0)
    for k, t in enumerate(shown):
        u, v = np.round(project_points(box[t, :3], intr, cam)).astype(int)
        assert 0 <= u < W and 0 <= v < H
        patch = frames[k, v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(int)
        r, g, b = np.median(patch, axis=0)
        assert r > g + 15 > b + 15, f"frame {k}: no box colour at the box's projected centre ({r}, {g}, {b})"
    both = _decode(paths[SIDE_BY_SIDE_NAME])
    assert both.shape[0] == len(shown) and both.shape[1] == H
    left = both[:, :, : both.shape[2] - W].reshape(len(shown), -1).mean(axis=1)
    expected = np.array([5 + 8 * ((first + t) % 30) for t in shown], float)
    assert np.abs(left - expected).max() < 6, "the source frame shown is not the clip's instant"
