"""``kibotos xgen``: the data factory's local commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

xgen_app = typer.Typer(no_args_is_help=True, help="XGen: human demonstration -> G1 interaction clips.")
_err = Console(stderr=True)


@xgen_app.command("run")
def run_cmd(
    video: Path | None = typer.Option(None, "--video", help="human demonstration video (mp4, ...)"),
    keypoints: Path | None = typer.Option(None, "--keypoints", help="3D keypoints .npz (README: XGen keypoints file)"),
    task: str = typer.Option("cargo_pickup", help="task id (cargo_pickup)"),
    task_version: str = typer.Option("1"),
    out: Path = typer.Option(Path("xgen_clips"), help="output directory: one folder per clip"),
    annotation: Path | None = typer.Option(None, help="JSON with ts/te (seconds), anchor type, key bodies"),
    uploader: str = typer.Option("local", help="recorded in every clip's metadata"),
    config: Path | None = typer.Option(None, help="XGen config YAML (default: packaged)"),
) -> None:
    """Run every XGen stage in-process and write the clips (no broker, no database).

    Exit code 0 clips written, 1 a stage refused the input (reason code printed), 2 bad arguments.

    Example: kibotos xgen run --keypoints pickup.npz --task cargo_pickup --out clips/
    """
    from kibotos.errors import KibotosError
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.pipeline import run_pipeline

    source = video or keypoints
    if source is None or (video is not None and keypoints is not None):
        _err.print("[red]error[/red] give exactly one of --video or --keypoints")
        raise typer.Exit(2)
    if task != "cargo_pickup":
        _err.print(f"[red]error[/red] {escape(f'[xgen_unknown_task] XGen knows the task cargo_pickup, not {task!r}')}")
        raise typer.Exit(2)
    try:
        from kibotos.tasks.registry import get_task

        get_task(task, task_version)  # the clip names a registered task schema
        cfg = load_xgen_config(config)
        ann = json.loads(annotation.read_text()) if annotation else None
    except (KibotosError, OSError, ValueError) as exc:
        code = getattr(exc, "reason_code", "xgen_arguments_invalid")
        _err.print(f"[red]error[/red] {escape(f'[{code}] {exc}')}")
        raise typer.Exit(2) from None
    outcome = run_pipeline(source=source, source_kind="video" if video else "keypoints", out_dir=out, cfg=cfg,
                           task_id=task, task_version=task_version, uploader=uploader, annotation=ann,
                           progress=lambda name: _err.print(f"[dim]xgen[/dim] {name} ..."))
    for r in outcome.results:
        status = "ok" if r.ok else f"refused [{r.reason_code}] {r.message}"
        _err.print(f"  {r.stage}: {escape(status)}")
    if not outcome.ok:
        raise typer.Exit(1)
    print(json.dumps({"clips": [str(p) for p in outcome.clips]}, indent=2))


@xgen_app.command("synth")
def synth_cmd(
    out: Path = typer.Option(Path("pickup_keypoints.npz"), help="keypoints file to write"),
    video: Path | None = typer.Option(None, help="also render it as an H.264 video (MuJoCo offscreen)"),
    duration: float = typer.Option(6.0, help="seconds"),
    fps: float = typer.Option(30.0),
    camera_yaw: float = typer.Option(0.6, help="camera turn in radians (0: side view)"),
) -> None:
    """Write a procedural human cargo pickup as a keypoints file (test data), and
    optionally as a video a pose estimator can read.

    Example: kibotos xgen synth --out pickup.npz --video pickup.mp4 && kibotos xgen run --video pickup.mp4 --out clips/
    """
    from kibotos.xgen.skeleton import write_keypoints
    from kibotos.xgen.synth import cargo_pickup

    pickup = cargo_pickup(duration, fps, camera_yaw=camera_yaw)
    write_keypoints(out, pickup.motion)
    print(str(out))
    if video is not None:
        from kibotos.media.video import encode_mp4
        from kibotos.xgen.render import render_pickup

        video.write_bytes(encode_mp4(render_pickup(pickup), fps))
        print(str(video))


def _xgen_client(api: str | None):
    from kibotos.cli.miner import _api
    from kibotos.ingest.client import IngestClient
    from kibotos.ingest.xgen import XGenClient

    return XGenClient(IngestClient(_api(api)))


def wait_with_progress(client, request_id: str, timeout_s: float, poll_s: float = 0.5, out=None) -> dict:
    """Poll ``GET /v1/xgen/{request_id}`` with a progress bar (stages, then clips) until
    the request is done or rejected. :raises ServiceError: still running after ``timeout_s``."""
    import time

    from tqdm import tqdm

    from kibotos.errors import ServiceError

    deadline = time.monotonic() + timeout_s
    with tqdm(total=100, desc="xgen", unit="%", bar_format="{desc} {bar} {n:.0f}% {postfix}", file=out) as bar:
        while True:
            status = client.status(request_id)
            bar.n = round(100 * float(status.get("progress") or 0.0))
            stage = status.get("current_stage") or status["state"]
            bar.set_postfix_str(f"{stage}; clips {status.get('clips_exported', 0)}/{status.get('clip_count') or '?'}"
                                f" exported, {status.get('clips_verified', 0)} verified")
            if status["state"] in ("done", "rejected"):
                return status
            if time.monotonic() > deadline:
                raise ServiceError(f"XGen request {request_id} still {status['state']} after {timeout_s:.0f}s")
            time.sleep(poll_s)


def _print_status(status: dict) -> None:
    clips = status.get("clips") or []
    summary = {k: status.get(k) for k in ("request_id", "state", "progress", "failed_stage", "reason_code",
                                          "clip_count", "clips_exported", "clips_verified", "uploader")}
    summary["stages"] = [{k: r.get(k) for k in ("stage", "clip_index", "passed", "reason_code", "wall_ms")}
                         for r in status.get("stages") or [] if r.get("clip_index", -1) == -1]
    summary["clips"] = [{k: c.get(k) for k in ("clip_id", "variant_kind", "verified", "quality_score",
                                               "quality_verdict", "quality_reason_code", "clip_uri", "preview_uri")}
                        for c in clips]
    print(json.dumps(summary, indent=2, default=str))


@xgen_app.command("submit")
def submit_cmd(
    source: Path = typer.Argument(..., help="human demonstration video (.mp4), or a keypoints .npz with --keypoints"),
    task: str = typer.Option("cargo_pickup", help="task id (cargo_pickup)"),
    task_version: str = typer.Option("1"),
    annotation: Path | None = typer.Option(None, help="JSON with ts/te (seconds), anchor type, key bodies"),
    keypoints: bool = typer.Option(False, "--keypoints", help="SOURCE is a 3D keypoints file, not a video"),
    keypair: Path = typer.Option(Path("~/.config/kibotos/miner-keypair.json"), "--keypair", "-k",
                                 help="uploader keypair (kibotos miner keygen); clips are attributed to it"),
    wait: bool = typer.Option(False, "--wait", help="follow the request with a progress bar until it is done"),
    timeout: float = typer.Option(900.0, help="seconds --wait waits"),
    api: str | None = typer.Option(None, help="ingest API base URL (default: the running stack's)"),
) -> None:
    """Upload a human demonstration to the running stack and turn it into G1 clips.

    The upload is signed and presigned like a bundle's; the GPU consumer group runs pose ->
    retarget -> interaction -> augment -> export + quality. Prints the request id.

    Exit code 0 accepted (with --wait: done), 1 the request was refused (reason code
    printed), 2 bad arguments or the API refused the upload, 3 the stack is unreachable.

    Example: kibotos xgen synth --out pickup.npz --video pickup.mp4 && kibotos xgen submit pickup.mp4 -k miner.json --wait
    """
    import uuid

    from kibotos.cli.miner import _keypair
    from kibotos.errors import KibotosError, ServiceError

    if not source.is_file():
        _err.print(f"[red]error[/red] no such file: {escape(str(source))}")
        raise typer.Exit(2)
    try:
        ann = json.loads(annotation.read_text()) if annotation else None
        if ann is not None and not isinstance(ann, dict):
            raise ValueError("the annotation must be a JSON object")
    except (OSError, ValueError) as exc:
        _err.print(f"[red]error[/red] {escape(f'[xgen_annotation_invalid] {exc}')}")
        raise typer.Exit(2) from None
    who = _keypair(keypair)
    client = _xgen_client(api)
    request_id = str(uuid.uuid4())
    try:
        done = client.submit(who, source, request_id, source_kind="keypoints" if keypoints else "video",
                             task_id=task, task_version=task_version, annotation=ann)
    except ServiceError as exc:
        _err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(3) from None
    except KibotosError as exc:
        _err.print(f"[red]refused[/red] {escape(f'[{exc.reason_code}] {exc}')}")
        raise typer.Exit(2) from None
    _err.print(f"accepted request {done['request_id']} (uploader {done['uploader']})")
    print(done["request_id"])
    if not wait:
        return
    try:
        status = wait_with_progress(client, request_id, timeout)
    except ServiceError as exc:
        _err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(3) from None
    _print_status(status)
    if status["state"] == "rejected":
        _err.print(f"[red]refused[/red] at {status['failed_stage']}: [{status['reason_code']}]")
        raise typer.Exit(1)


@xgen_app.command("status")
def status_cmd(
    request_id: str = typer.Argument(..., help="the id kibotos xgen submit printed"),
    api: str | None = typer.Option(None, help="ingest API base URL (default: the running stack's)"),
) -> None:
    """Where an XGen request stands (state, progress, stage results, clips).

    State: queued, running, rejected (with the stage and reason code) or done; every clip
    with its quality verdict, S and preview.

    Exit code 0 found, 1 unknown request, 3 the stack is unreachable.

    Example: kibotos xgen status 0f6c3f7e-1d2b-4c55-9a0e-2b1f4f5e6a7b
    """
    from kibotos.errors import KibotosError, ServiceError

    try:
        status = _xgen_client(api).status(request_id)
    except ServiceError as exc:
        _err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(3) from None
    except KibotosError as exc:
        _err.print(f"[red]error[/red] {escape(f'[{exc.reason_code}] {exc}')}")
        raise typer.Exit(1) from None
    _print_status(status)
