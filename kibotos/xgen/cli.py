"""``kibotos xgen``: the data factory's local commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

xgen_app = typer.Typer(no_args_is_help=True, help="XGen: human demonstration -> G1 interaction clips.")
_err = Console(stderr=True)


@xgen_app.command("run")
def run_cmd(
    video: Optional[Path] = typer.Option(None, "--video", help="human demonstration video (mp4, ...)"),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", help="3D keypoints .npz (README: XGen keypoints file)"),
    task: str = typer.Option("cargo_pickup", help="task id (cargo_pickup)"),
    task_version: str = typer.Option("1"),
    out: Path = typer.Option(Path("xgen_clips"), help="output directory: one folder per clip"),
    annotation: Optional[Path] = typer.Option(None, help="JSON with ts/te (seconds), anchor type, key bodies"),
    uploader: str = typer.Option("local", help="recorded in every clip's metadata"),
    config: Optional[Path] = typer.Option(None, help="XGen config YAML (default: packaged)"),
) -> None:
    """Run every XGen stage in-process and write the clips (no broker, no database).

    Exit code 0 clips written, 1 a stage refused the input (reason code printed), 2 bad arguments.

    Example: kibotos xgen run --keypoints pickup.npz --task cargo_pickup --out clips/
    """
    from kibotos.errors import KibotosError
    from kibotos.xgen.config import load_xgen_config
    from kibotos.xgen.pipeline import run_pipeline

    if (video is None) == (keypoints is None):
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
        raise typer.Exit(2)
    source = video or keypoints
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
    video: Optional[Path] = typer.Option(None, help="also render it as an H.264 video (MuJoCo offscreen)"),
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
        from kibotos.video import encode_mp4
        from kibotos.xgen.render import render_pickup

        video.write_bytes(encode_mp4(render_pickup(pickup), fps))
        print(str(video))
