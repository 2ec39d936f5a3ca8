"""Reports as self-contained HTML pages: content, safety, the CLI and HTTP routes, and what
a real browser (headless Chromium) draws."""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.objectstore import LocalObjectStore
from kibotos.reports.html import VERDICT_COLOURS, pair_thresholds, render_report_html, score_components, sync_svg
from kibotos.reports.server import QueryServer
from kibotos.warehouse import open_client
from streams.sink_rows import rows_for
from tests.fixtures.browser import needs_chromium, screenshot
from tests.fixtures.warehouse import (
    REAL_RGB,
    SIM_RGB,
    gate,
    insert,
    playback_gate,
    prepare_schema,
    report_dict,
    scores_dict,
    sync_gate,
    verdict_event,
)

ACCEPTED_SID = "0787f2c0-bf31-5b9d-8dbd-f197dfa63fe4"
REJECTED_SID = "5d1c1d0e-2a55-4a4f-9c7e-7f6b8e0e2b11"
COMPONENTS = {"pose": 0.82, "retarget": 0.9, "align": None, "task": 0.7, "object": 0.66, "novel": 0.95}


def cheap_gates() -> list[dict]:
    return [
        gate("gate_a_integrity", True, 20.1, metrics={"T": 401, "frozen_fraction": 0.0},
             thresholds={"flatline_max_fraction": 0.2, "min_samples": 10}, flags=["joint_vel_computed"]),
        gate("gate_b_timestamps", True, 0.2, metrics={"missing_fraction": 0.0, "rate_deviation": 0.01},
             thresholds={"max_missing_fraction": 0.05, "max_rate_deviation": 0.1, "max_gap_ms": 200.0}),
    ]


def accepted_report(store) -> dict:
    gates = [*cheap_gates(), sync_gate(121.9, 136.8, 0.9456), playback_gate(store, ACCEPTED_SID)]
    return report_dict(ACCEPTED_SID, "miner-alice", gates, points=17.5, scores=scores_dict(COMPONENTS, 17.5))


def rejected_report() -> dict:
    gates = [*cheap_gates(), sync_gate(-298.1, 89.3, 0.9022)]
    return report_dict(REJECTED_SID, "miner-eve", gates, sync=(-298.1, 89.3, 0.9022))


@pytest.fixture
def store(tmp_path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


# --- content -----------------------------------------------------------------------------

def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_page_carries_verdict_gates_thresholds_scores_and_keyframes(store):
    page = render_report_html(accepted_report(store), store)
    assert "<h1>accepted</h1>" in page and VERDICT_COLOURS["accepted"] in page
    for text in ("gate_a_integrity", "gate_c_sync", "playback", "joint_vel_computed", "max_missing_fraction",
                 "S_pose", "S = 0.8", "reward <b>17.5</b>", "scoring-2026.12.1", "silhouette IoU 0.55"):
        assert text in page, text
    # every keyframe pair embedded, byte for byte what the store holds
    images = _images(page)
    assert len(images) == 6
    stored = {p.read_bytes() for p in (store.root / "keyframes" / ACCEPTED_SID).glob("*.png")}
    assert set(images) == stored


def test_rejected_page_names_the_reason_and_the_failing_metric():
    page = render_report_html(rejected_report())
    assert "<h1>rejected</h1>" in page and VERDICT_COLOURS["rejected"] in page
    assert "sync_offset_mismatch" in page and "at gate_c_sync" in page
    # the disagreement is judged against its bound and shown as beyond it
    assert re.search(r"class='num beyond'>387\.4<", page)
    assert "id='scores'" not in page and "id='keyframes'" not in page  # nothing to show


def test_page_is_self_contained():
    page = render_report_html(rejected_report())
    assert "default-src 'none'" in page  # CSP: the browser fetches nothing
    assert not re.search(r"<(script|link|iframe|object)\b", page, re.I)
    for url in re.findall(r"(?:src|href)\s*=\s*['\"]([^'\"]*)", page):
        assert url.startswith("data:"), url


def test_hostile_strings_are_escaped():
    evil = "<script>alert(1)</script>"
    rep = rejected_report()
    rep["miner_id"] = evil
    rep["reason_code"] = evil
    rep["gates"][0]["metrics"]["note"] = evil
    rep["gates"][0]["flags"] = [evil]
    rep["gates"].append(gate("playback", True, 1.0, metrics={"keyframes": [
        {"frame": evil, "strategy": evil, "real_uri": "javascript:alert(1)", "sim_uri": None}]}))
    page = render_report_html(rep)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "src='javascript" not in page


def test_unreadable_images_are_named_not_fatal(store, tmp_path):
    rep = accepted_report(store)
    frames = rep["gates"][-1]["metrics"]["keyframes"]
    store.put_bytes(b"not a png", "keyframes/x/000001-real.png")
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(store.read_bytes(frames[1]["real_uri"], 1 << 20))
    frames[0]["real_uri"] = store.uri_for("keyframes/x/000001-real.png")
    frames[1]["real_uri"] = outside.as_uri()  # outside the store: refused
    frames[2]["sim_uri"] = store.uri_for("keyframes/x/gone.png")
    page = render_report_html(rep, store)
    assert "not a PNG or JPEG image" in page
    assert "not readable: object_uri_invalid" in page and "not readable: bundle_not_found" in page
    assert len(_images(page)) == 3
    assert "no object store configured" in render_report_html(rep, None)


def test_metrics_pair_with_their_bounds():
    paired, unpaired = pair_thresholds(
        {"missing_fraction": 0.0, "overlap_fraction_kin": 0.99, "speed_exceed_fraction": 0.0, "score": 0.4, "T": 3},
        {"max_missing_fraction": 0.05, "min_overlap_fraction": 0.9, "max_exceed_fraction": 0.05, "score_min": 0.5,
         "grid_ms": 10.0, "required_units": {"a": "rad"}})
    assert paired == {"missing_fraction": [("max", "max_missing_fraction", 0.05)],
                      "overlap_fraction_kin": [("min", "min_overlap_fraction", 0.9)],
                      "speed_exceed_fraction": [("max", "max_exceed_fraction", 0.05)],
                      "score": [("min", "score_min", 0.5)]}
    assert unpaired == {"grid_ms": 10.0, "required_units": {"a": "rad"}}


def test_score_components_read_both_report_shapes():
    as_dict = score_components(scores_dict(COMPONENTS, 12.0))
    as_list = score_components({"score": 0.8, "reward": 12.0, "weights_used": {"pose": 0.25},
                                "components": [{"name": "pose", "value": 0.8, "inputs": {}, "missing": False},
                                               {"name": "align", "value": None, "missing": True,
                                                "inputs": {"missing": "no VLM endpoint"}}]})
    assert [c["name"] for c in as_dict] == list(COMPONENTS)
    assert as_dict[2] == {"name": "align", "value": None, "weight": None, "note": "no evidence"}
    assert as_list == [{"name": "pose", "value": 0.8, "weight": 0.25, "note": None},
                       {"name": "align", "value": None, "weight": None, "note": "no VLM endpoint"}]


def test_sync_plot_is_valid_svg_with_markers_in_order():
    svg = ET.fromstring(sync_svg(-298.1, 89.3, 0.9022))
    ns = {"s": "http://www.w3.org/2000/svg"}
    claimed = svg.find("s:polygon/s:title", ns)
    estimated = svg.find("s:circle/s:title", ns)
    assert claimed.text == "claimed -298.1 ms" and estimated.text == "estimated 89.3 ms"
    claimed_x = float(svg.find("s:polygon", ns).get("points").split(",")[0])
    estimated_x = float(svg.find("s:circle", ns).get("cx"))
    assert claimed_x < estimated_x
    ET.fromstring(sync_svg(None, 10.0, None))  # a partial estimate still draws


# --- CLI and HTTP ------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path):
    """A KIBOTOS_HOME with both reports in its embedded warehouse and the keyframes in its
    object store, as `kibotos up` leaves it (the chdb client is closed again)."""
    home = tmp_path / "home"
    store = LocalObjectStore(home / "objects")
    client = open_client(f"chdb://{(home / 'chdb').resolve()}")
    try:
        prepare_schema(client)
        tables: dict[str, list] = {}
        for rep in (accepted_report(store), rejected_report()):
            for table, row in rows_for("verdicts", verdict_event(rep, 1_790_000_000_000)):
                tables.setdefault(table, []).append(row)
        insert(client, tables)
    finally:
        client.close()
    return home


def test_cli_writes_the_page(home, tmp_path, monkeypatch):
    monkeypatch.setenv("KIBOTOS_HOME", str(home))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", ACCEPTED_SID, "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<h1>accepted</h1>" in page and len(_images(page)) == 6
    assert "decided at" in page and "2026-09-21T" in page
    unknown = "00000000-0000-4000-8000-000000000000"
    missing = CliRunner().invoke(app, ["report", unknown, "--html", str(tmp_path / "n.html")])
    assert missing.exit_code == 1 and not (tmp_path / "n.html").exists()
    malformed = CliRunner().invoke(app, ["report", "nope", "--html", str(tmp_path / "n.html")])
    assert malformed.exit_code == 2 and "invalid_submission_id" in malformed.output
    assert not (tmp_path / "n.html").exists()


@pytest.fixture
def server(home):
    client = open_client(f"chdb://{(home / 'chdb').resolve()}")
    try:
        srv = QueryServer(client, store=LocalObjectStore(home / "objects")).start()
        yield srv
        srv.stop()
    finally:
        client.close()


def test_http_serves_the_page(server):
    with urllib.request.urlopen(f"{server.url}/reports/{ACCEPTED_SID}.html", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        page = resp.read().decode()
    assert "<h1>accepted</h1>" in page and len(_images(page)) == 6
    with urllib.request.urlopen(f"{server.url}/reports/{ACCEPTED_SID}", timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/json"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/reports/nope.html", timeout=30)
    assert info.value.code == 404


# --- in a real browser -------------------------------------------------------------------

def _dominant(region: np.ndarray) -> tuple[int, int, int]:
    colours, counts = np.unique(region.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


@needs_chromium
def test_browser_draws_verdict_colours_and_content(store, tmp_path):
    shots = {}
    for verdict, rep in (("accepted", accepted_report(store)), ("rejected", rejected_report())):
        page = tmp_path / f"{verdict}.html"
        page.write_text(render_report_html(rep, store))
        shots[verdict] = screenshot(page.as_uri(), tmp_path / f"{verdict}.png")
    for verdict, image in shots.items():
        assert image.std() > 20, f"{verdict}: blank page"
        header = _dominant(image[5:60, :])
        assert np.abs(np.array(header) - _hex(VERDICT_COLOURS[verdict])).max() <= 3, (verdict, header)
        body = _dominant(image[300:1500, :])
        assert min(body) > 200, f"{verdict}: the body is not a light page: {body}"
    accepted, rejected = (_dominant(shots[v][5:60, :]) for v in ("accepted", "rejected"))
    assert accepted[1] > accepted[0] and rejected[0] > rejected[1]  # green vs red


def _pixels_near(image: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(image.astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


@needs_chromium
def test_browser_draws_the_keyframe_pairs(store, tmp_path):
    page = tmp_path / "keyframes.html"
    page.write_text(render_report_html(accepted_report(store), store))
    image = screenshot(page.as_uri(), tmp_path / "keyframes.png", height=4000)
    # three real and three simulated frames, each mostly its colour
    assert _pixels_near(image, REAL_RGB) > 3 * 10_000
    assert _pixels_near(image, SIM_RGB) > 3 * 10_000
    without = tmp_path / "without.html"
    without.write_text(render_report_html(accepted_report(store), None))
    assert _pixels_near(screenshot(without.as_uri(), tmp_path / "without.png", height=4000), REAL_RGB) < 100


@needs_chromium
def test_browser_renders_the_served_page(server, tmp_path):
    image = screenshot(f"{server.url}/reports/{REJECTED_SID}.html", tmp_path / "served.png")
    assert image.std() > 20
    assert np.abs(np.array(_dominant(image[5:60, :])) - _hex(VERDICT_COLOURS["rejected"])).max() <= 3


# --- keyframes in S3 ---------------------------------------------------------------------

@pytest.mark.integration
def test_keyframes_are_read_from_s3(s3_store):
    s3 = s3_store
    rep = accepted_report(s3)
    frames = rep["gates"][-1]["metrics"]["keyframes"]
    assert frames[0]["real_uri"].startswith("s3://")
    frames[1]["sim_uri"] = frames[1]["sim_uri"].replace(s3.bucket, "other-bucket")
    page = render_report_html(rep, s3)
    assert len(_images(page)) == 5 and "not readable: object_uri_invalid" in page
    with pytest.raises(Exception, match="larger than"):
        s3.read_bytes(frames[0]["real_uri"], max_bytes=100)
