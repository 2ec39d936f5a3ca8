"""The XGen part of ``kibotos demo``: a generated human cargo pickup (rendered as a video
a pose estimator reads; 3D keypoints with ``demo_source(kind="keypoints")`` or where no
offscreen GL exists) is uploaded through the stack's ingest API
(signed like a bundle) while the bundles are verified, and turned into G1 clips by the
XGen jobs; the demo then shows every clip with its quality
verdict, S and preview, read back from ClickHouse.

Two calls so the XGen request runs alongside the bundle verification (the demo's added
time is what remains after the verdicts): ``submit_demo_request`` right after the
uploads, ``show_demo_request`` after the verdicts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kibotos.errors import KibotosError
from kibotos.identity import Keypair
from kibotos.ingest.client import IngestClient
from kibotos.ingest.xgen import XGenClient

DURATION_S, FPS = 6.0, 15.0


def demo_source(work: Path, kind: str = "keypoints") -> tuple[Path, str]:
    """The procedural human pickup as a 3D keypoints file (the seed's placeholder motion),
    or with ``kind="video"`` rendered as a video a pose estimator reads (falling back to
    the keypoints where no offscreen GL context exists).

    The demo uses the video (pose -> retarget -> ... all run): with the pose stage's
    landmark outlier rejection and the retargeter's joint continuity (config
    xgen-2026.12.4) its clips pass the verifier (README "XGen through the stack"); before,
    gate E refused every one (``jerk_exceeded``: a ~2 rad hip flip from MediaPipe's ankle
    jumps)."""
    from kibotos.xgen.synth import cargo_pickup

    work.mkdir(parents=True, exist_ok=True)
    pickup = cargo_pickup(DURATION_S, FPS, camera_yaw=0.6)
    if kind == "keypoints":
        from kibotos.xgen.skeleton import write_keypoints

        return write_keypoints(work / "pickup.npz", pickup.motion), "keypoints"
    try:
        from kibotos.media.video import encode_mp4
        from kibotos.xgen.render import render_pickup

        path = work / "pickup.mp4"
        path.write_bytes(encode_mp4(render_pickup(pickup), FPS))
        return path, "video"
    except (RuntimeError, ImportError, OSError):
        from kibotos.xgen.skeleton import write_keypoints

        return write_keypoints(work / "pickup.npz", pickup.motion), "keypoints"


def submit_demo_request(client: IngestClient, keypair: Keypair, work: Path, console: Console) -> str | None:
    """Upload the demo's human demonstration; the request id, or None if refused."""
    path, kind = demo_source(work, kind="video")
    request_id = str(uuid.uuid4())
    try:
        XGenClient(client).submit(keypair, path, request_id, source_kind=kind)
    except KibotosError as exc:
        console.print(f"[red]XGen upload refused[/red] [{exc.reason_code}] {exc}")
        return None
    console.print(f"XGen: uploaded a {DURATION_S:.0f} s human cargo pickup as {kind} ({path.name}) as request "
                  f"{request_id[:8]}; pose -> retarget -> interaction -> augment -> export + quality run on the "
                  "GPU consumer group alongside the bundles")
    return request_id


def show_demo_request(client: IngestClient, request_id: str, console: Console, timeout_s: float) -> dict | None:
    """Wait for the request with a progress bar, then print its clips; the status."""
    xgen = XGenClient(client)
    deadline = time.monotonic() + timeout_s
    status: dict | None = None
    with Progress(TextColumn("XGen {task.fields[stage]}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[clips]}"), TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("xgen", total=100, stage="queued", clips="")
        while time.monotonic() < deadline:
            try:
                status = xgen.status(request_id)
            except KibotosError:
                status = None
            if status:
                bar.update(task, completed=100 * float(status.get("progress") or 0), stage=status.get(
                    "current_stage") or status["state"], clips=f"{status.get('clips_exported', 0)}/"
                    f"{status.get('clip_count') or '?'} clips")
                if status["state"] in ("done", "rejected"):
                    break
            time.sleep(0.5)
    if not status:
        console.print(f"[red]XGen request {request_id[:8]}: no status after {timeout_s:.0f}s[/red]")
        return None
    if status["state"] == "rejected":
        console.print(f"[red]XGen request refused at {status['failed_stage']}[/red]: {status['reason_code']}")
        return status
    table = Table(title=f"XGen clips of request {request_id[:8]} (uploader {str(status.get('uploader'))[:10]}…, "
                        "read back from ClickHouse)")
    for col in ("clip", "variant", "frames", "quality", "reason", "S", "preview"):
        table.add_column(col)
    for c in status["clips"]:
        ok = c["verified"]
        table.add_row(c["clip_id"], c["variant_kind"], str(c["frames"]),
                      "[green]verified[/green]" if ok else f"[red]{c['quality_verdict']}[/red]",
                      c.get("quality_reason_code") or "", "-" if c.get("quality_score") is None
                      else f"{c['quality_score']:.2f}", "yes" if c.get("preview_uri") else "-")
    console.print(table)
    stages = ", ".join(f"{s['stage']} {s['wall_ms'] / 1000:.1f}s" for s in status["stages"] if s["clip_index"] == -1)
    console.print(f"XGen: {status['clips_exported']} clips exported, {status['clips_verified']} verified by the "
                  f"verifier's chain (gates A-E, IK, task cargo_pickup); stages: {stages}. "
                  f"kibotos xgen status {request_id}")
    if status["state"] != "done":
        console.print(f"[yellow]XGen request still {status['state']} after {timeout_s:.0f}s[/yellow]")
    return status
