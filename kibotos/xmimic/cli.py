"""``kibotos train``, ``kibotos eval`` and ``kibotos policies list|show|download``
(README "XMimic"). Exit codes: 0 done, 1 the run refused its input (reason code printed),
2 bad arguments."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

policies_app = typer.Typer(no_args_is_help=True, help="XMimic policies: the local registry first, then the object store.")
_err = Console(stderr=True)


def _fail(exc: Exception, code: int = 1) -> NoReturn:
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
    from kibotos.xmimic.sources import local_clips

    # an XGen request id, or a dataset version name[@vN] (kibotos.xmimic.sources)
    return local_clips(str(dataset), settings.home, _store(settings),
                       Path(tempfile.mkdtemp(prefix="xmimic-clips-")))[0]


def train_cmd(
    clips: Path | None = typer.Option(None, "--clips", help="directory of XGen clip folders (clip.npz + metadata.json)"),
    dataset: str | None = typer.Option(None, "--dataset", help="XGen request id, or dataset version NAME[@vN]"),
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
    via_stack: bool = typer.Option(False, "--via-stack", help="run as a train job of the running stack's GPU "
                                   "consumers (training.requests) and follow its training.progress"),
    run_id: str | None = typer.Option(None, "--run-id", help="--via-stack: the run (default: a new one); "
                                      "a finished run is answered, an unfinished one resumed"),
    timeout: float | None = typer.Option(None, "--timeout", help="--via-stack: stop following after this many s"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="also log params and per-iteration metrics to this "
                                      "MLflow tracking URI or directory (a local file store); off by default"),
) -> None:
    """Train an XMimic teacher (PPO, privileged observations) or a student (PPO + BC from
    the teacher, NEP or MoCap observations); resumes from OUT's last checkpoint. With
    --via-stack the running stack trains it (README "XMimic through the stack").

    Example: kibotos train --clips clips/ --out runs/t1 && kibotos train --clips clips/ --role mocap --teacher runs/t1/checkpoints/model_200.pt --out runs/s1
    """
    from kibotos.errors import KibotosError
    from kibotos.xmimic.clips import load_clips
    from kibotos.xmimic.config import load_xmimic_config
    from kibotos.xmimic.registry import checkpoint_path, register
    from kibotos.xmimic.train import train

    settings = _settings()
    if via_stack:
        _train_via_stack(settings, dataset=dataset, clips=clips, config=config, role=role, teacher=teacher, task=task,
                         device=device, backend=backend, num_envs=num_envs, iterations=iterations, seed=seed,
                         run_id=run_id, timeout=timeout)
        return
    versions: list[str] = []
    try:
        cfg = load_xmimic_config(config)
        if dataset is not None and clips is None:
            from kibotos.xmimic.sources import local_clips

            clip_dir, data = local_clips(dataset, settings.home, _store(settings))
            versions = list(data.dataset_versions)
        else:
            clip_dir = resolve_clips(clips, dataset, settings)
        clip_list = load_clips(clip_dir)
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

        tracker = None
        try:
            if mlflow:  # README "XMimic: MLflow"
                from kibotos.xmimic.mlflow_log import MLflowProgress

                tracker = MLflowProgress(mlflow, run_name=out.name, inner=on_progress, params={
                    "role": role, "config_version": cfg.config_version, "task": task or cfg.task, "device": device,
                    "num_envs": num_envs, "iterations": total, "seed": seed, "dataset": dataset, "clips": len(clip_list)})
            result = train(clip_list, cfg, out, role=role, teacher=teacher_path, task=task, num_envs=num_envs,
                           iterations=iterations, device=device, backend=backend, seed=seed,
                           progress=tracker or on_progress,
                           store=_store(settings), run_id=out.name, time_budget_s=time_budget,
                           extra_meta={"dataset": dataset, "dataset_versions": versions} if dataset else None)
        except KibotosError as exc:
            if tracker:
                tracker.close("FAILED")
            _fail(exc)
        if tracker:
            tracker.close()
    summary = {"checkpoint": str(result.checkpoint), "iterations": result.iterations,
               "resumed_from": result.resumed_from, "env_steps": result.env_steps, "seconds": round(result.seconds, 1)}
    if register_policy:
        summary["policy_id"] = register(settings.home, result.checkpoint)
    print(json.dumps(summary, indent=2))


def _train_via_stack(settings, *, dataset, clips, config, role, teacher, task, device, backend, num_envs,
                     iterations, seed, run_id, timeout) -> None:
    """``kibotos train --via-stack``: exit 0 done, 1 failed (reason code) or not finished
    within --timeout, 2 bad arguments, 3 no stack. Prints the run's JSON summary."""
    from kibotos.errors import KibotosError, ServiceError
    from kibotos.reports.reads import bootstrap_for
    from kibotos.xmimic import stack_client
    from kibotos.xmimic.clips import XMimicError
    from topics.catalogue import Catalogue

    if clips is not None or dataset is None:
        _fail(XMimicError("--via-stack trains on --dataset (an XGen request id or NAME[@vN]), not --clips",
                          reason_code="xmimic_arguments_invalid"), 2)
    try:
        bootstrap = bootstrap_for(settings)
    except ServiceError as exc:
        _fail(exc, 3)
    catalogue = Catalogue.from_settings(settings)
    run_id = run_id or stack_client.new_run_id()
    try:
        request = stack_client.build_request(
            run_id=run_id, role=role, dataset=dataset, settings=settings, store=_store(settings), config=config,
            teacher=str(teacher) if teacher else None, task=task, iterations=iterations, num_envs=num_envs,
            device=device, backend=backend, seed=seed)
        stack_client.submit(bootstrap, catalogue, request)
    except ServiceError as exc:
        _fail(exc, 3)
    except KibotosError as exc:
        _fail(exc, 2 if getattr(exc, "reason_code", "").endswith(("arguments_invalid", "config_invalid")) else 1)
    _err.print(f"run {run_id}: requested on {dataset} ({', '.join(request['dataset_versions'])}, "
               f"{len(request['clips'])} clips)")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=_err) as bar:
        job = bar.add_task(f"train {role} (stack)", total=iterations or None, info="queued")

        def on_event(ev: dict) -> None:
            sr = ev["success_rate"]
            info = ev["state"] + (f" from it {ev['resumed_from']}" if ev["resumed_from"] else "")
            if ev["reward_terms"]:
                info += f" reward {ev['reward_terms'].get('total', 0):.3f}"
            info += f" SR(train) {sr:.2f}" if sr is not None else ""
            bar.update(job, total=ev["iterations"] or None, completed=ev["iteration"], info=info)

        try:
            final = stack_client.follow(bootstrap, catalogue, run_id, on_event, timeout_s=timeout,
                                        since_ms=request["requested_at"] - 1000)
        except ServiceError as exc:
            _fail(exc, 1)
    summary = {k: final.get(k) for k in ("run_id", "state", "policy_id", "checkpoint_uri", "iteration", "iterations",
                                         "env_steps", "dataset", "dataset_versions", "resumed_from", "reason_code")}
    print(json.dumps(summary, indent=2))
    if final["state"] != "done":
        raise typer.Exit(1)


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
    preview: bool = typer.Option(False, "--preview", help="also render the first clip's rollout (MuJoCo, mp4) "
                                 "for the policy page"),
    via_stack: bool = typer.Option(False, "--via-stack", help="run as an eval job of the running stack "
                                   "(eval.requests) and wait for its rows"),
    wait: float = typer.Option(600.0, "--timeout", help="--via-stack: stop waiting after this many s"),
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
    if via_stack:  # README "XMimic: evaluation rows, pass rule, attribution"
        from kibotos.xmimic.evals import eval_via_stack

        try:
            report = eval_via_stack(settings, policy, dataset=dataset, config=config, task=task,
                                    heldout=not no_heldout, seed=seed, trained_on=trained_on, timeout_s=wait,
                                    preview=preview)
        except KibotosError as exc:
            _fail(exc, 3 if getattr(exc, "reason_code", "") == "service_unavailable" else 1)
        print(json.dumps(report, indent=2))
        return
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
            if preview:
                from kibotos.xmimic.preview import PREVIEW_NAME, write_preview

                folder = settings.home / "policies" / policy
                dest = folder / PREVIEW_NAME if folder.is_dir() else path.with_suffix(".preview.mp4")
                report["preview"] = write_preview(clip_list[0], cfg, path, dest, task=task)
                # next to the policy in the object store, where the read API serves it to the page
                from kibotos.xmimic.evals import policy_id_for_checkpoint
                from kibotos.xmimic.preview import store_preview

                pid = policy_id_for_checkpoint(path) if Path(policy).is_file() else policy
                report["preview"]["uri"] = store_preview(_store(settings), pid, dest)
            if not Path(policy).is_file():
                save_eval(settings.home, policy, report)
    except KibotosError as exc:
        _fail(exc)
    if out:
        out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


@policies_app.command("list")
def policies_list() -> None:
    """Policies (id, role, task, iterations, dataset versions, latest SR/GSR and the
    reference's SR): a running stack's, else the warehouse's, then the local registry's."""
    from kibotos.xmimic.policy_reads import read_policies

    print(json.dumps(read_policies(_settings()), indent=2, default=str))


@policies_app.command("show")
def policies_show(policy_id: str,
                  html: Path | None = typer.Option(None, "--html", help="write the policy's evaluation page here")) -> None:
    """A policy: training run, dataset versions, latest evaluation per clip, earlier
    evaluations, training curves (README "XMimic: policy pages").

    Example: kibotos policies show teacher-t1-it200 --html t1.html
    """
    from kibotos.errors import KibotosError
    from kibotos.xmimic.clips import XMimicError
    from kibotos.xmimic.policy_reads import read_policy, registry_model

    settings = _settings()
    try:
        doc = read_policy(settings, policy_id)
        if doc is None:
            raise XMimicError(f"no policy {policy_id!r} in the stack, the warehouse or {settings.home / 'policies'}",
                              reason_code="xmimic_policy_unknown")
    except KibotosError as exc:
        _fail(exc)
    if html is None:
        print(json.dumps(doc, indent=2, default=str))
        return
    from urllib.parse import quote

    from kibotos.runtime.stack import running_stack
    from kibotos.xmimic.html import page_for

    state = running_stack(settings)
    base = state["query_url"] if state else ""
    local = registry_model(settings.home, policy_id)
    from kibotos.xmimic.preview import find_preview

    try:  # a written page inlines the preview (it must open without a server)
        preview = find_preview(policy_id, store=_store(settings), home=settings.home)
    except KibotosError as exc:
        _fail(exc)
    html.write_text(page_for(doc, checkpoint_href=local.resolve().as_uri() if local else doc.get("checkpoint_uri"),
                             dataset_href=lambda ref: f"{base}/datasets/{quote(ref, safe='@')}.html",
                             preview_mp4=preview), encoding="utf-8")
    print(f"wrote {html}")


@policies_app.command("download")
def policies_download(policy_id: str, dest: Path = typer.Option(Path("."), "--out", help="file or directory")) -> None:
    from kibotos.errors import KibotosError
    from kibotos.xmimic.registry import download

    settings = _settings()
    try:
        try:
            print(str(download(settings.home, policy_id, dest, store=_store(settings))))
        except KibotosError as exc:  # not in the registry: a checkpoint the stack's training stored
            from kibotos.xmimic.policy_reads import read_policy

            doc = read_policy(settings, policy_id) if exc.reason_code == "xmimic_policy_unknown" else None
            if not doc or not doc.get("checkpoint_uri"):
                raise
            target = dest / f"{policy_id}.pt" if dest.is_dir() else dest
            target.write_bytes(_store(settings).read_bytes(doc["checkpoint_uri"], max_bytes=1 << 31))
            print(str(target))
    except KibotosError as exc:
        _fail(exc)
