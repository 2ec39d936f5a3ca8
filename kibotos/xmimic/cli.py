"""``kibotos train``, ``kibotos eval`` and ``kibotos policies list|show|download``
(README "XMimic"). Exit codes: 0 done, 1 the run refused its input (reason code printed),
2 bad arguments."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

policies_app = typer.Typer(no_args_is_help=True, help="XMimic policies: the local registry first, then the object store.")
_err = Console(stderr=True)


def _fail(exc: Exception, code: int = 1) -> None:
    reason = getattr(exc, "reason_code", "xmimic_error")
    _err.print(f"[red]error[/red] {escape(f'[{reason}] {exc}')}")
    raise typer.Exit(code)


def _settings():
    from kibotos.config.settings import Settings

    return Settings()


def _store(settings):
    from kibotos.objectstore import store_from_settings

    return store_from_settings(settings)


def resolve_clips(clips: Path | None, dataset: str | None, settings) -> Path:
    """A clips directory: ``--clips DIR`` as given, ``--dataset ID`` = an XGen request's
    exported clips in the object store (``xgen/<ID>/clips/``), copied to a temp dir."""
    from kibotos.xmimic.clips import XMimicError

    if (clips is None) == (dataset is None):
        raise XMimicError("give exactly one of --clips or --dataset", reason_code="xmimic_arguments_invalid")
    if clips is not None:
        return clips
    store = _store(settings)
    dest = Path(tempfile.mkdtemp(prefix=f"xmimic-{dataset}-"))
    prefix = f"xgen/{dataset}/clips/"
    n = 0
    for info in store.list(prefix):
        rel = info.key[len(prefix):]
        if rel.endswith(("clip.npz", "metadata.json")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(store.read_bytes(store.uri_for(info.key), max_bytes=1 << 30))
            n += 1
    if n == 0:
        raise XMimicError(f"no clips for dataset {dataset!r} under {prefix}", reason_code="xmimic_dataset_unknown")
    return dest


def train_cmd(
    clips: Path | None = typer.Option(None, "--clips", help="directory of XGen clip folders (clip.npz + metadata.json)"),
    dataset: str | None = typer.Option(None, "--dataset", help="XGen request id whose clips are in the object store"),
    config: Path | None = typer.Option(None, "--config", help="XMimic config YAML (default: packaged xmimic.yaml)"),
    role: str = typer.Option("teacher", help="teacher | nep | mocap (students need --teacher)"),
    teacher: Path | None = typer.Option(None, help="teacher checkpoint or registry id (students)"),
    task: str | None = typer.Option(None, help="task config name (default: the config's `task`)"),
    device: str = typer.Option("cpu", help="cpu | cuda (cuda: Genesis backend, more envs)"),
    backend: str | None = typer.Option(None, help="mujoco | genesis (default: the task's, auto)"),
    num_envs: int | None = typer.Option(None, help="environments (default: the task's)"),
    iterations: int | None = typer.Option(None, help="PPO iterations (default: the config's)"),
    time_budget: float | None = typer.Option(None, help="stop (with a checkpoint) after this many seconds"),
    out: Path = typer.Option(Path("xmimic_runs/run"), help="run directory; an existing one is resumed"),
    register_policy: bool = typer.Option(True, "--register/--no-register", help="add the final checkpoint to the registry"),
    seed: int = typer.Option(0),
) -> None:
    """Train an XMimic teacher (PPO, privileged observations) or a student (PPO + BC from
    the teacher, NEP or MoCap observations); resumes from OUT's last checkpoint.

    Example: kibotos train --clips clips/ --out runs/t1 && kibotos train --clips clips/ --role mocap --teacher runs/t1/checkpoints/model_200.pt --out runs/s1
    """
    from kibotos.errors import KibotosError
    from kibotos.xmimic.clips import load_clips
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.registry import checkpoint_path, register
    from kibotos.xmimic.train import train

    settings = _settings()
    try:
        cfg = load_xmimic_config(config)
        clip_list = load_clips(resolve_clips(clips, dataset, settings))
        teacher_path = checkpoint_path(settings.home, str(teacher)) if teacher else None
    except KibotosError as exc:
        _fail(exc, 2 if getattr(exc, "reason_code", "").endswith(("arguments_invalid", "config_invalid")) else 1)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = iterations or (cfg.teacher.iterations if role == "teacher" else cfg.student.iterations)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=_err) as bar:
        job = bar.add_task(f"train {role}", total=total, info="")

        def on_progress(ev: dict) -> None:
            sr = ev["success_rate"]
            info = f"reward {ev['reward_terms'].get('total', 0):.3f} value {ev['losses'].get('value', 0):.3f}"
            info += f" SR(train) {sr:.2f}" if sr is not None else ""
            bar.update(job, completed=ev["iteration"], info=info)

        try:
            result = train(clip_list, cfg, out, role=role, teacher=teacher_path, task=task, num_envs=num_envs,
                           iterations=iterations, device=device, backend=backend, seed=seed, progress=on_progress,
                           store=_store(settings), run_id=out.name, time_budget_s=time_budget)
        except KibotosError as exc:
            _fail(exc)
    summary = {"checkpoint": str(result.checkpoint), "iterations": result.iterations,
               "resumed_from": result.resumed_from, "env_steps": result.env_steps, "seconds": round(result.seconds, 1)}
    if register_policy:
        summary["policy_id"] = register(settings.home, result.checkpoint)
    print(json.dumps(summary, indent=2))


def eval_cmd(
    policy: str = typer.Argument(..., help="registry id, checkpoint path, or 'reference_pd' / 'zero_torque' (baselines)"),
    clips: Path | None = typer.Option(None, "--clips"),
    dataset: str | None = typer.Option(None, "--dataset"),
    config: Path | None = typer.Option(None, "--config"),
    task: str | None = typer.Option(None),
    device: str = typer.Option("cpu"),
    backend: str | None = typer.Option(None),
    no_heldout: bool = typer.Option(False, "--no-heldout", help="SR only (no GSR variants)"),
    out: Path | None = typer.Option(None, help="also write the report JSON here"),
    record: bool = typer.Option(True, "--record/--no-record",
                                help="write policy_evals rows (stack topic, else the warehouse) and pay attribution"),
    trained_on: list[str] = typer.Option([], "--trained-on",
                                         help="dataset version NAME@vN the policy trained on (default: its metadata)"),
    seed: int = typer.Option(0, help="part of the eval id: the same policy, dataset, config and seed replace rows"),
) -> None:
    """SR on the clips, GSR on held-out variants, per clip, with the open-loop reference
    (PD) and zero-torque baselines; the per-clip results become policy_evals rows, and a
    policy that passes (config eval.pass_rule) pays the miners of its dataset versions.

    Example: kibotos eval teacher-t1-it200 --clips clips/
    """
    from kibotos.errors import KibotosError
    from kibotos.xmimic.clips import load_clips
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.evaluate import BASELINES, evaluate, run_episodes
    from kibotos.xmimic.registry import checkpoint_path, save_eval

    settings = _settings()
    try:
        cfg = load_xmimic_config(config)
        clip_list = load_clips(resolve_clips(clips, dataset, settings))
        if policy in BASELINES:
            sr = run_episodes(clip_list, cfg, baseline=policy, task=task, device=device, backend=backend)
            report = {"policy": policy, "config_version": cfg.config_version, "sr": {"rate": sr.rate,
                      "clips": [c.__dict__ for c in sr.clips]}}
        else:
            path = checkpoint_path(settings.home, policy)
            rep = evaluate(clip_list, cfg, policy_path=path, task=task, device=device, backend=backend,
                           heldout=not no_heldout)
            report = rep.to_dict()
            if record:  # README "XMimic: evaluation rows, pass rule, attribution"
                from kibotos.xmimic.evals import record_from_cli

                report["recorded"] = record_from_cli(settings, rep, policy, path, dataset=dataset, clips=clips,
                                                     rule=cfg.eval.pass_rule, seed=seed, trained_on=trained_on)
            if not Path(policy).is_file():
                save_eval(settings.home, policy, report)
    except KibotosError as exc:
        _fail(exc)
    if out:
        out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


@policies_app.command("list")
def policies_list() -> None:
    """Registered policies (id, role, task, iteration, SR/GSR once evaluated)."""
    from kibotos.xmimic.registry import list_policies

    rows = list_policies(_settings().home)
    print(json.dumps([{k: r.get(k) for k in ("policy_id", "role", "task", "iteration", "config_version", "sr", "gsr")}
                      for r in rows], indent=2))


@policies_app.command("show")
def policies_show(policy_id: str) -> None:
    from kibotos.errors import KibotosError
    from kibotos.xmimic.registry import show

    try:
        print(json.dumps(show(_settings().home, policy_id), indent=2))
    except KibotosError as exc:
        _fail(exc)


@policies_app.command("download")
def policies_download(policy_id: str, dest: Path = typer.Option(Path("."), "--out", help="file or directory")) -> None:
    from kibotos.errors import KibotosError
    from kibotos.xmimic.registry import download

    settings = _settings()
    try:
        print(str(download(settings.home, policy_id, dest, store=_store(settings))))
    except KibotosError as exc:
        _fail(exc)
