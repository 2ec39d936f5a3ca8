"""The policy read side over a real embedded ClickHouse: the read API's ``/policies``
routes, the policy document, the evaluation page as text and as headless Chromium draws
it (cards, per-clip table, one training curve per reward term, checkpoint download, the
rollout preview served from the object store and drawn by Chromium's <video>)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from infra.migrate import apply_migrations
from kibotos.media.video import encode_mp4
from kibotos.objectstore import LocalObjectStore
from kibotos.reports.server import QueryServer
from kibotos.warehouse import open_client
from kibotos.xmimic.evals import eval_id, insert
from kibotos.xmimic.html import CURVE_COLOUR, HEADER_COLOUR
from kibotos.xmimic.preview import store_preview
from tests.fixtures.browser import needs_chromium, rgb, screenshot

T0 = 1_796_000_000_000
PREVIEW_RGB = (230, 20, 200)  # a colour no other part of the page uses
PID, RUN = "teacher-run7-it6", "run7"
TERMS = ("total", "object_pos", "contact")
ITERATIONS = 6
# (split, clip, policy success, reference success)
CLIPS = [("train", "c-00-base", 1, 1), ("train", "c-01-size", 1, 0), ("train", "c-02-yaw", 0, 0),
         ("heldout", "c-00-base-size0.7", 1, 0), ("heldout", "c-00-base-yaw20", 0, 0)]


def _insert_rows(client, table: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    client.insert(f"kibotos.{table}", [[r[c] for c in cols] for r in rows], column_names=cols)


def load(client, objects: Path) -> bytes:
    """A trained policy as the stack's tables hold it; returns its checkpoint's bytes."""
    ckpt = objects / "xmimic" / "policies" / PID / "model.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"checkpoint-bytes-" + uuid.uuid4().bytes)
    _insert_rows(client, "policies", [{
        "policy_id": PID, "run_id": RUN, "role": "teacher", "task": "arms_only", "dataset_versions": ["g1-cargo@v2"],
        "checkpoint_uri": ckpt.as_uri(), "config_version": "xmimic-test", "iterations": ITERATIONS,
        "env_steps": 4608, "created_at": T0}])
    _insert_rows(client, "training_progress", [{
        "run_id": RUN, "iteration": i, "iterations": ITERATIONS, "state": "running", "env_steps": 768 * i,
        "success_rate": i / ITERATIONS, "losses_json": "{}", "at": T0 + i,
        "reward_terms_json": json.dumps({t: 0.1 * i + k for k, t in enumerate(TERMS)})} for i in range(1, ITERATIONS + 1)])
    eid = eval_id(PID, "xgen-req-9", "xmimic-test", 0)
    insert([("policy.evals", {"eval_id": eid, "policy_id": PID, "dataset": "xgen-req-9", "split": split, "clip_id": clip,
                              "episodes": 1, "successes": ok, "success_rate": float(ok),
                              "baseline_success_rate": float(ref), "tracking_error_m": 0.02 + 0.01 * n,
                              "final_height_error_m": 0.01, "config_version": "xmimic-test", "created_at": T0 + 10})
            for n, (split, clip, ok, ref) in enumerate(CLIPS)], client)
    return ckpt.read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policies")
    client = open_client(f"chdb://{tmp / 'chdb'}")
    apply_migrations(client)
    ckpt = load(client, tmp / "objects")
    # the rollout preview, as `kibotos eval --preview` or the eval job stores it: in the object store only
    frames = np.zeros((10, 120, 160, 3), np.uint8)
    frames[...] = PREVIEW_RGB
    (tmp / "preview.mp4").write_bytes(encode_mp4(frames, 10.0))
    store = LocalObjectStore(tmp / "objects")
    store_preview(store, PID, tmp / "preview.mp4")
    server = QueryServer(client, datasets_root=tmp / "home" / "datasets", store=store).start()
    try:
        yield server.url, ckpt, tmp
    finally:
        server.stop()
        client.close()


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_policy_routes(served):
    url, ckpt, _ = served
    status, _, body = get(f"{url}/policies")
    [row] = json.loads(body)
    assert status == 200 and row["policy_id"] == PID and row["dataset_versions"] == ["g1-cargo@v2"]
    assert row["sr"] == pytest.approx(2 / 3) and row["gsr"] == pytest.approx(0.5)
    assert row["reference_sr"] == pytest.approx(1 / 3)
    doc = json.loads(get(f"{url}/policies/{PID}")[2])
    assert [p["iteration"] for p in doc["progress"]] == list(range(1, ITERATIONS + 1))
    assert [(r["split"], r["clip_id"]) for r in doc["eval"]["rows"]] == [(s, c) for s, c, _, _ in CLIPS]
    assert doc["eval"]["clips"] == {"train": 3, "heldout": 2} and doc["env_steps"] == 4608
    status, ctype, data = get(f"{url}/policies/{PID}/checkpoint")
    assert status == 200 and ctype == "application/octet-stream" and data == ckpt
    assert get(f"{url}/policies/nope")[0] == 404
    status, _, body = get(f"{url}/policies/bad%20id")
    assert status == 400 and json.loads(body)["reason_code"] == "xmimic_policy_id_invalid"
    status, _, body = get(f"{url}/policies/{PID}/model.mp4")
    assert status == 400 and json.loads(body)["reason_code"] == "xmimic_policy_id_invalid"


def test_policy_page_content(served):
    url, _, _ = served
    status, ctype, body = get(f"{url}/policies/{PID}.html")
    html = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    assert html.count("<tr class='clip pass'") == 3 and html.count("<tr class='clip fail'") == 2
    points = dict(re.findall(r"id='curve-([a-z_]+)'[^>]*>.*?data-points='(\d+)'", html))
    assert points == {t: str(ITERATIONS) for t in ("success_rate", *TERMS)}
    assert f"href='/policies/{PID}/checkpoint'" in html and "href='/datasets/g1-cargo@v2.html'" in html
    assert re.search(r"id='card-SR'.*?<div class='v'>0\.67</div>", html)
    assert re.search(r"id='card-GSR'.*?<div class='v'>0\.50</div>", html)
    assert "<div class='v'>fails</div>" in html and "sr_below_minimum" in html  # 0.67 < the rule's minimum SR
    assert "src='http" not in html and "href='http" not in html  # self-contained: nothing fetched from elsewhere
    # the preview is served beside the page, from the object store
    assert f"<video id='preview-video' controls muted loop preload='auto' src='/policies/{PID}/preview.mp4'>" in html
    status, ctype, data = get(f"{url}/policies/{PID}/preview.mp4")
    assert (status, ctype) == (200, "video/mp4") and data == (tmp_path_of(served) / "preview.mp4").read_bytes()



@needs_chromium
def test_browser_draws_header_badges_and_curves(served):
    url, _, tmp = served
    image = screenshot(f"{url}/policies/{PID}.html", tmp / "policy.png", height=1600)
    header = image[5:60].reshape(-1, 3)
    assert (np.abs(header - rgb(HEADER_COLOUR)).max(1) <= 3).mean() > 0.8
    curve = np.abs(image.astype(int) - rgb(CURVE_COLOUR)).max(2) <= 12
    # one drawn curve per figure: the curve-coloured pixels fall in (at least) four separate boxes
    n, _, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(curve.astype(np.uint8), np.ones((9, 9))))
    big = [s for s in stats[1:] if s[cv2.CC_STAT_WIDTH] > 150]
    assert len(big) >= 1 + len(TERMS), [tuple(s) for s in stats[1:]]
    # every curve rises left to right (the fixture's terms and SR grow with the iteration)
    for s in big:
        x, y, w, h = s[:4]
        ys, xs = np.nonzero(curve[y:y + h, x:x + w])
        assert np.polyfit(xs, ys, 1)[0] < 0  # image y grows downwards


def tmp_path_of(served) -> Path:
    return served[2]


@needs_chromium
def test_browser_plays_the_preview_from_the_object_store(served):
    """Chromium resolves the page's <video> source (the read API reading the object store)
    and draws the preview's first frame: its colour fills the video's box."""
    url, _, tmp = served
    image = screenshot(f"{url}/policies/{PID}.html", tmp / "preview.png", height=3000)
    shown = (np.abs(image.astype(int) - np.array(PREVIEW_RGB)).max(2) <= 12)
    # the frame's upper part (the player's controls shade the lower part), across its whole 160 px width
    ys, xs = np.nonzero(shown)
    assert shown.sum() > 0.15 * 160 * 120 and xs.max() - xs.min() >= 150, (int(shown.sum()), xs.min(), xs.max())
