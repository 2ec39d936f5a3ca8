"""The ``kibotos`` command line. One command = one function; domain errors become exit
codes with a one-line message, never a traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kibotos.cli.miner import miner_app
from kibotos.cli.output import emit, make_console, print_rows
from kibotos.datasets.cli import attribution_cmd, bench_export_cmd, datasets_app
from kibotos.errors import KibotosError
from kibotos.xgen.cli import xgen_app
from kibotos.xmimic.cli import eval_cmd, policies_app, train_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Kibotos: verify, score and reward robot demonstrations.")
bundle_app = typer.Typer(no_args_is_help=True, help="Inspect submission bundles.")
app.add_typer(bundle_app, name="bundle")
app.add_typer(miner_app, name="miner")
app.add_typer(xgen_app, name="xgen")
app.command("train")(train_cmd)
app.command("eval")(eval_cmd)
app.add_typer(policies_app, name="policies")
app.add_typer(datasets_app, name="datasets")
app.command("attribution")(attribution_cmd)
console = make_console()  # a closed pipe (`| head`) keeps the command's exit code
err = Console(stderr=True)
# what `kibotos verify` runs: the CPU gates only; everything after them needs the stack
VERIFY_SCOPE = ("gates A-E only (in-process); gate F (pose), IK residual, playback, alignment, task, "
                "novelty and scoring run in the stack (kibotos up, kibotos submit): this is not a final verdict")
SAMPLE_VARIANTS = ("genuine, shape_mismatch, nan, flatline, non_monotonic, gap, short_video, sync_lie, degrees, "
                   "limit_violation, teleport, jerk, ik_perturbed, ik_target_shift, task_failed, human_video, "
                   "video_static, video_blank, video_swapped, video_reversed, video_delayed")


def _fail(exc: KibotosError, code: int = 2) -> None:
    err.print(f"[red]error[/red] {escape(f'[{exc.reason_code}] {exc}')}")
    raise typer.Exit(code)


@app.command()
def verify(
    path: Path = typer.Argument(..., help="bundle: *.zarr.zip or a Zarr directory"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON report"),
    config: Path | None = typer.Option(None, help="gate thresholds YAML (default: packaged)"),
) -> None:
    """Run gates A–E in-process on one bundle (no broker, no database).

    Only gates A–E: gate F (pose), the IK residual, playback, alignment, task completion,
    novelty and scoring need the stack (kibotos up; kibotos submit). "accepted" here
    means "passed gates A–E", not a final verdict; the output says so.

    Exit code 0 accepted by gates A–E, 1 rejected, 2 unreadable input (also when piped
    into a reader that stops early, e.g. `| head`).

    Example: kibotos verify episode.zarr.zip --json
    """
    from kibotos.cli.verify import verify_path
    from kibotos.config.gates import load_config

    try:
        outcome = verify_path(path, load_config(config))
    except KibotosError as exc:
        _fail(exc)
    report = outcome.report
    if as_json:
        emit(report.model_dump_json(indent=2))
        err.print(f"scope: {VERIFY_SCOPE}", markup=False, highlight=False)
    else:
        from kibotos.media.render import print_report

        print_report(console, report)
        console.print(f"scope: {VERIFY_SCOPE}", markup=False, highlight=False)
    raise typer.Exit(outcome.exit_code)


@app.command()
def sample(
    out: Path = typer.Option(Path("samples"), help="output directory"),
    robot: list[str] = typer.Option([], help="robot_model_id[@revision]; repeatable (default: all)"),
    variant: list[str] = typer.Option([], help=f"genuine or a failure class, repeatable (default: all): {SAMPLE_VARIANTS}"),
    seed: int = typer.Option(0),
    miner: str = typer.Option("miner-sample", help="miner_id written into the manifests"),
) -> None:
    """Write realistic sample episodes (genuine and one per failure class).

    Example: kibotos sample --out samples --robot franka_panda --variant genuine --variant teleport
    """
    from kibotos.robots import list_robots
    from kibotos.synthetic.samples import VARIANTS, write_samples

    known = list_robots()
    robots = []
    for spec in robot or [f"{m}@{r}" for m, r in known]:
        model_id, _, rev = spec.partition("@")
        matches = [k for k in known if k[0] == model_id and (not rev or k[1] == rev)]
        if not matches:
            _fail(KibotosError(f"unknown robot {spec!r}; known: {', '.join(f'{m}@{r}' for m, r in known)}",
                               reason_code="unknown_robot_model"))
        robots.append(matches[0])
    variants = variant or list(VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        _fail(KibotosError(f"unknown variant(s) {bad}; known: {', '.join(VARIANTS)}", reason_code="unknown_variant"))
    paths = write_samples(out, robots, variants, seed=seed, miner_id=miner)
    for p in paths:
        console.print(str(p))


@app.command()
def robots() -> None:
    """List the registered robot models."""
    from kibotos.robots import get_robot, list_robots

    table = Table("robot_model_id", "revision", "DoF", "model file", "description")
    for model_id, rev in list_robots():
        r = get_robot(model_id, rev)
        table.add_row(model_id, rev, str(r.dof), r.model_path.name, r.description)
    console.print(table)


@bundle_app.command("inspect")
def bundle_inspect(path: Path, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print a bundle's manifest, streams and shapes (reads metadata only).

    Example: kibotos bundle inspect episode.zarr.zip
    """
    from kibotos.bundle import open_bundle

    try:
        with open_bundle(path) as view:
            manifest = view.manifest_raw
            arrays = view.arrays()
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        emit(json.dumps({"manifest": manifest, "arrays": [a.__dict__ for a in arrays]}, indent=2, default=str))
        return
    console.print_json(json.dumps(manifest, default=str))
    table = Table("stream", "shape", "dtype", "bytes")
    for a in arrays:
        table.add_row(a.path, str(a.shape), a.dtype, f"{a.nbytes:,}")
    console.print(table)


def _settings():
    from kibotos.config.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: bad KIBOTOS_* values
        _fail(KibotosError(f"invalid settings: {exc}", reason_code="config_invalid"))


@app.command()
def up(workers: int = typer.Option(1, help="gate worker processes (<= topic partitions)"),
       ephemeral: bool = typer.Option(False, "--ephemeral",
                                      help="keep the broker's log in memory (fast start; a restart loses in-flight work)"),
       reconcile_every: float = typer.Option(60.0, "--reconcile-every", min=1,
                                             help="seconds between reconciliation passes"),
       stuck_after: float = typer.Option(900.0, "--stuck-after", min=1,
                                         help="seconds after which an accepted submission without a verdict is "
                                              "emitted again")) -> None:
    """Start the embedded stack (Tansu, topics, ClickHouse, sink, gate workers) until Ctrl-C.

    The broker keeps its log on disk under the home (SeaweedFS; 10-20 s to start), so a
    restart after any crash resumes every in-flight submission; dead workers, consumers
    and threads are restarted with back-off; stuck submissions are emitted again.

    Example: kibotos up --workers 2
    """
    import signal
    import threading

    from kibotos.runtime.stack import Stack

    settings = _settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Stack(settings, workers=workers, log=console.print, ephemeral=ephemeral,
                   reconcile_every_s=reconcile_every, stuck_after_s=stuck_after) as stack:
            console.print(f"[green]up[/green]  bootstrap {stack.bootstrap}  home {settings.home}  (Ctrl-C to stop)")
            try:
                while not stop.wait(1.0):
                    stack.supervise()
            except KeyboardInterrupt:
                pass
            console.print("stopping…")
    except KibotosError as exc:
        _fail(exc)


@app.command()
def submit(
    paths: list[Path] = typer.Argument(..., help="bundles to submit"),
    miner: str = typer.Option("anonymous", help="miner id used when a manifest names none"),
    keypair: Path | None = typer.Option(None, "--keypair", "-k",
                                           help="sign and upload through the ingest API (= kibotos miner submit)"),
) -> None:
    """Upload bundles to the object store and emit their submissions.received events.

    With --keypair this is the signed path (presigned upload + verification at the
    ingest API); without, an operator's direct path that trusts the files.

    Example: kibotos submit samples/*.zarr.zip --keypair miner.json
    """
    if keypair is not None:
        from kibotos.cli.miner import submit as miner_submit

        return miner_submit(paths, keypair=keypair, api=None, wait=False, timeout=600.0)
    from kibotos.objectstore import store_from_settings
    from kibotos.reports.reads import bootstrap_for
    from kibotos.runtime.submit import submit_paths
    from topics.catalogue import Catalogue

    settings = _settings()
    try:
        subs = submit_paths(paths, bootstrap=bootstrap_for(settings), store=store_from_settings(settings),
                            catalogue=Catalogue.from_settings(settings), miner_id=miner)
    except KibotosError as exc:
        _fail(exc)
    for sub in subs:
        console.print(f"{sub.submission_id}  {sub.miner_id}  {sub.bundle_uri}" + ("" if sub.readable else "  (unreadable manifest)"))


@app.command()
def report(submission_id: str, as_json: bool = typer.Option(False, "--json"),
           html: Path | None = typer.Option(None, "--html", help="write a self-contained HTML page here")) -> None:
    """Fetch a submission's verification report from the warehouse.

    Example: kibotos report 0787f2c0-bf31-5b9d-8dbd-f197dfa63fe4 --json
    Example: kibotos report 0787f2c0-bf31-5b9d-8dbd-f197dfa63fe4 --html report.html
    """
    import uuid

    from kibotos.reports.model import VerificationReport
    from kibotos.reports.reads import get_report, stored_report_count

    try:
        submission_id = str(uuid.UUID(submission_id.strip()))
    except ValueError:
        _fail(KibotosError(f"{submission_id[:80]!r} is not a submission id (a UUID such as "
                           "0787f2c0-bf31-5b9d-8dbd-f197dfa63fe4)", reason_code="invalid_submission_id"))
    settings = _settings()
    try:
        stored = stored_report_count(settings)  # an empty store is explained, not queried
        rep = None if stored is not None and stored[0] == 0 else get_report(settings, submission_id)
    except KibotosError as exc:
        _fail(exc)
    if rep is None:
        if stored is not None and stored[0] == 0:
            err.print(escape(f"no report for {submission_id}: {stored[1]}"))
        else:
            err.print(f"no report for {submission_id} (not submitted, or not decided yet)")
        raise typer.Exit(1)
    if html is not None:
        from kibotos.objectstore import store_from_settings
        from kibotos.reports.html import render_report_html

        try:
            store = store_from_settings(settings)  # the keyframe images
        except KibotosError as exc:
            store = None
            err.print(f"[yellow]keyframe images left out[/yellow]: {escape(str(exc))}")
        html.write_text(render_report_html(rep, store), encoding="utf-8")
        console.print(f"wrote {html}")
        return
    if as_json:
        emit(json.dumps(rep, indent=2, default=str))
        return
    from kibotos.media.render import print_report

    print_report(console, VerificationReport.model_validate({k: v for k, v in rep.items()
                                                              if k in VerificationReport.model_fields}))
    if rep.get("final") is False:  # anyone may upload under any submission id
        console.print(f"[yellow]not the submission's verdict[/yellow]: upload {rep.get('upload_id')} was rejected "
                      "at ingestion; the submission has no final verdict and may still be uploaded")


@app.command()
def ledger(miner: str | None = typer.Option(None, help="only this miner's entries"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the points ledger (entries, or balances per miner without --miner).

    Example: kibotos ledger --miner miner-alice
    """
    from kibotos.reports.reads import balances
    from kibotos.reports.reads import ledger as read_ledger

    settings = _settings()
    try:
        rows = read_ledger(settings, miner) if miner else balances(settings)
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        emit(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("no ledger entries")
        return
    print_rows(console, rows)  # full ids, never cut to the terminal's width


@app.command()
def verdicts(
    follow: bool = typer.Option(False, "--follow", "-f", help="keep waiting for new verdicts"),
    group: str | None = typer.Option(None, help="consumer group (resume where it left off)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Print verdicts as validators see them on the verdicts topic.

    Example: kibotos verdicts --follow --json
    """
    from kibotos.reports.reads import bootstrap_for
    from streams.verdict_feed import follow_verdicts
    from topics.catalogue import Catalogue

    settings = _settings()
    try:
        feed = follow_verdicts(bootstrap_for(settings), Catalogue.from_settings(settings), group_id=group,
                               idle_timeout_s=None if follow else 10.0)
        for v in feed:
            if as_json:
                emit(json.dumps({k: v[k] for k in v if k != "report_json"}))
            else:
                console.print(f"{v['submission_id']}  {v['miner_id']:<14} {v['verdict']:<9} "
                              f"{v.get('reason_code') or '':<26} {v['points']:g}")
    except KeyboardInterrupt:
        pass
    except KibotosError as exc:
        _fail(exc)


@app.command()
def demo(workers: int = typer.Option(1, help="gate worker processes")) -> None:
    """Run the whole pipeline on the embedded stack with a realistic mix of miners.

    Example: kibotos demo
    """
    from kibotos.runtime.demo import run_demo

    try:
        code = run_demo(_settings(), console, workers=workers)
    except KibotosError as exc:
        _fail(exc)
    raise typer.Exit(code)


admin_app = typer.Typer(help="Operator commands.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("reconcile")
def admin_reconcile(
    stuck_after: float = typer.Option(900.0, "--stuck-after", min=0,
                                      help="seconds without a verdict after which a submission is emitted again "
                                           "(deployment only; the embedded stack uses its own --stuck-after)"),
    as_json: bool = typer.Option(False, "--json"),
    retry: list[str] | None = typer.Option(None, "--retry", metavar="SUBMISSION_ID",
                                              help="a given-up submission to give another round of re-emissions "
                                                   "(repeatable)"),
) -> None:
    """Find submissions accepted at ingest that have no verdict after a bound and emit
    them again (kibotos.runtime.reconcile). Against the running embedded stack, or, with
    KIBOTOS_CLICKHOUSE_DSN and KIBOTOS_BOOTSTRAP_SERVERS set, against a deployment.
    Attempt counts are kept in the warehouse; one over the limit is given up and
    dead-lettered (reconcile_attempts_exhausted) until --retry.

    Example: kibotos admin reconcile --json
    """
    from kibotos.errors import ServiceError
    from kibotos.runtime.stack import request_reconcile, running_stack

    settings = _settings()
    try:
        if running_stack(settings) is not None:
            result = request_reconcile(settings, retry=retry)
        elif settings.bootstrap_servers and settings.clickhouse_dsn and not settings.clickhouse_dsn.startswith("chdb"):
            from kibotos.runtime.reconcile import Reconciler
            from kibotos.runtime.submit import producer
            from kibotos.warehouse import open_client
            from topics.catalogue import Catalogue

            client = open_client(settings.clickhouse_dsn)
            try:
                reconciler = Reconciler(client, producer(settings.bootstrap_servers), Catalogue.from_settings(settings),
                                        stuck_after_s=stuck_after)
                reset = reconciler.reset(list(retry)) if retry else []
                result = {**reconciler.run_once().as_dict(), "reset": reset}
            finally:
                client.close()
        else:
            raise ServiceError(f"no stack is running under {settings.home} and no deployment is configured "
                               "(KIBOTOS_CLICKHOUSE_DSN, KIBOTOS_BOOTSTRAP_SERVERS); `kibotos up` reconciles at start")
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"{len(result['reemitted'])} stuck submission(s) emitted again, {len(result['waiting'])} emitted "
                  f"recently, {len(result['given_up'])} given up; {result['pending']} in flight")
    for sid in result["reemitted"]:
        console.print(f"  re-emitted {sid}")
    for sid in result.get("reset", []):
        console.print(f"  retry {sid}: attempts reset")
    for sid in result["given_up"]:
        console.print(f"  [red]given up[/red] {sid} (emitted again several times without a verdict; dead-lettered as "
                      "reconcile_attempts_exhausted; --retry to try again)")


bench_app = typer.Typer(help="Benchmarks: stage costs as ratios measured in one run, results as JSON.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("xgen")
def bench_xgen(
    duration: float = typer.Option(6.0, help="seconds of the procedural human pickup"),
    fps: float = typer.Option(30.0),
    quality: bool = typer.Option(True, help="judge and preview every clip, as the export job does"),
    parts: bool = typer.Option(False, "--parts", help="also: pose stage vs bare video decode, and quality "
                                                      "(bundle render vs verifier chain) and Genesis preview cost"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Per-stage cost of the XGen jobs as ratios to one G1 FK pass over the same frames,
    and clips per minute (one actor per kind, serial); with --parts, the pose stage against
    a bare decode of the same video and the quality check / preview broken down.

    Example: kibotos bench xgen --duration 6 --json benchmarks/results/xgen.json
    """
    from rich.table import Table

    from benchmarks.xgen import run_xgen_bench, write_json

    result = run_xgen_bench(duration, fps, quality, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    table = Table(title=f"XGen job stages, {result['frames']} frames; one FK pass {result['fk_pass_ms']} ms "
                        f"({result['machine']['cpus']} CPUs)")
    for col in ("stage", "jobs", "total s", "per job s", "per job / FK pass"):
        table.add_column(col)
    for r in result["stages"]:
        table.add_row(r["stage"], str(r["jobs"]), f"{r['seconds']:g}", f"{r['per_job_s']:g}", f"{r['vs_fk_pass']:g}x")
    console.print(table)
    console.print(f"{result['clips']} clips ({result['clips_verified']} verified) in {result['total_s']} s: "
                  f"{result['clips_per_minute']} clips/minute; retarget {result['retarget_frames_per_s']} frames/s")
    if parts:
        from benchmarks.xgen import bench_pose_vs_decode, bench_quality_parts

        console.print("[dim]pose vs decode ...[/dim]")
        p = result["pose_vs_decode"] = bench_pose_vs_decode()
        console.print(f"pose stage {p['pose_stage_s']} s vs bare decode {p['decode_s']} s over {p['frames']} frames: "
                      f"{p['vs_decode']}x ({p['pose_frames_per_s']} frames/s)")
        console.print("[dim]quality and preview ...[/dim]")
        q = result["quality_parts"] = bench_quality_parts()
        console.print(f"quality of one {q['frames']}-frame clip: bundle {q['bundle_s']} s ({q['bundle_vs_fk']}x FK), "
                      f"verifier chain {q['chain_s']} s ({q['chain_vs_fk']}x FK); passed {q['passed']}, S {q['score']}")
        if "preview_s_per_frame" in q:
            console.print(f"preview: scene {q['preview_scene_build_s']} s once, {q['preview_s_per_frame']} s per frame "
                          f"({q['preview_frame_vs_fk']}x FK pass of the whole clip)")
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")


@bench_app.command("evidence")
def bench_evidence(
    stage: list[str] | None = typer.Option(None, "--stage", help="pose, ik, playback (repeatable; default all)"),
    repeats: int = typer.Option(3, min=1, help="timed runs per stage (median reported)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Per-stage cost of the evidence jobs vs the bare model call: pose frames/s, IK ms per
    1,000 frames, playback s per keyframe."""
    from rich.table import Table

    from benchmarks.evidence import STAGES, run_evidence_bench, write_json

    unknown = [s for s in stage or [] if s not in STAGES]
    if unknown:
        console.print(f"[red]unknown stage(s) {unknown}; known: {', '.join(STAGES)}[/red]")
        raise typer.Exit(2)
    result = run_evidence_bench(stage or None, repeats, progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    table = Table(title=f"evidence stages vs bare model call (median of {repeats}; {result['machine']['cpus']} CPUs)")
    for col in ("stage", "unit", "stage", "bare model", "stage/bare", "inputs"):
        table.add_column(col)
    for r in result["results"]:
        table.add_row(r["stage"], r["unit"], f"{r['stage_value']:g}", f"{r['bare_value']:g}", f"{r['ratio']:g}x",
                      str(r["frames"]))
    console.print(table)
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")


@bench_app.command("novelty")
def bench_novelty(
    sizes: str = typer.Option("1,30,120", help="index sizes (synthetic rows), comma-separated"),
    queries: int = typer.Option(5, min=1, help="checks timed per size (median reported)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """The novelty candidate query's cost per check (wall, CPU, and ClickHouse's analysis
    alone) on synthetic indexes of each size."""
    from benchmarks.novelty_query import run_novelty_query_bench

    result = run_novelty_query_bench([int(s) for s in sizes.split(",") if s.strip()], queries)
    for n, by in result["sizes"].items():
        r = by["current"]
        console.print(f"{n} rows: check {r['check_wall_s_p50']} s wall, {r['check_cpu_s_p50']} s CPU "
                      f"(analysis {r['explain_cpu_s']} s), {r['candidates_p50']} candidates")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
        console.print(f"wrote {json_out}")


bench_app.command("export")(bench_export_cmd)  # kibotos.datasets.cli: dataset export vs reading the bundles


@bench_app.command("pipeline")
def bench_pipeline(
    episodes: int = typer.Option(3, "--episodes", min=1, help="genuine episodes per size class"),
    sizes: str = typer.Option("small,medium,large", help="size classes: small (5 s), medium (20 s), large (60 s)"),
    workers: str = typer.Option("1,2", help="gate worker counts of the embedded stack runs (<= topic partitions)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
    skip_lerobot: bool = typer.Option(False, "--skip-lerobot", help="do not time lerobot-doctor"),
    timeout_s: float = typer.Option(900.0, "--timeout", min=1, help="seconds to wait for a stack run's verdicts"),
) -> None:
    """Cost of verifying episodes: the bare floor (read and decode what the gates read), the
    in-process gate chain, the embedded stream pipeline per worker count, lerobot-doctor.

    Prints throughput, p50/p95 latency, per-gate cost, peak memory and the ratios
    chain/floor, stack/chain and 2 workers/1 worker.

    Examples:
      kibotos bench pipeline
      kibotos bench pipeline --episodes 1 --sizes small --workers 1 --json out/pipeline.json
    """
    from benchmarks.pipeline import parse_sizes, parse_workers, run_pipeline_bench, summary_tables, write_json

    try:
        size_list = parse_sizes(sizes)
        worker_list = parse_workers(workers, _settings().topic_partitions)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    try:
        result = run_pipeline_bench(episodes, size_list, worker_list, doctor=not skip_lerobot, timeout_s=timeout_s,
                                    progress=lambda m: console.print(f"[dim]{escape(m)}[/dim]"))
    except KibotosError as exc:
        _fail(exc)
    for table in summary_tables(result):
        console.print(table)
    doctor = result["lerobot_doctor"]
    if doctor["status"] != "ok":
        console.print(f"lerobot-doctor: {doctor['status']}: {escape(doctor['reason'])}")
    peaks = result["rusage"]
    console.print(f"peak RSS of this process over the run: {peaks['self_maxrss_mb']:,.0f} MB "
                  f"(children: the sampled peaks above)")
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")


@bench_app.command("faults")
def bench_faults(
    scenarios: str = typer.Option("gate_worker,broker,broker_store,up,sink,sink_down,novelty",
                                  help="comma-separated: gate_worker, broker, broker_store, up, up_term (SIGTERM), "
                                       "sink, sink_down, novelty, gpu_consumer (Ray + IK), ray_actor (one Ray job actor SIGKILLed "
                                       "mid-job), hostile_delay (other miners' verdict delay behind hostile "
                                       "bundles, against the gate time budget)"),
    submissions: int = typer.Option(8, min=2, help="episodes per scenario (half before the fault, half after)"),
    workers: int = typer.Option(2, min=1, help="gate worker processes"),
    sink_down: float = typer.Option(60.0, "--sink-down", min=1, help="seconds the sink stays down in sink_down"),
    timeout_s: float = typer.Option(600.0, "--timeout", min=10, help="seconds to wait for the verdicts per scenario"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the result here"),
) -> None:
    """Fault drills through the real stack (`kibotos up` in a process of its own): SIGKILL a
    gate worker, the broker, its SeaweedFS, `kibotos up` itself, a GPU consumer; stop the sink
    or the novelty thread; then count submitted / verdicts / duplicates / lost / paid twice
    and the recovery time.

    Example: kibotos bench faults --scenarios gate_worker,up --submissions 6 --sink-down 20
    """
    from benchmarks.faults import run_faults_bench, write_json

    try:
        result = run_faults_bench([s.strip() for s in scenarios.split(",") if s.strip()], submissions,
                                  workers=workers, sink_down_s=sink_down, timeout_s=timeout_s,
                                  progress=lambda m: console.print(f"[dim]{escape(m)}[/dim]"))
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    except KibotosError as exc:
        _fail(exc)
    table = Table(title=f"fault drills: {submissions} submissions each, {workers} gate workers")
    for col in ("scenario", "submitted", "verdicts", "duplicates", "revisions", "lost", "paid twice",
                "ledger ≠ report", "unpaid", "recovery s", "startup s"):
        table.add_column(col)
    for r in result["results"]:
        table.add_row(r["scenario"], str(r["submitted"]), str(r["verdicts"]), str(r["duplicates"]),
                      str(r["revisions"]), str(r["lost"]), str(r["paid_twice"]), str(r["ledger_mismatch"]),
                      str(r["unpaid"]), f"{r['recovery_s']:g}", f"{r['startup_s']:g}")
    console.print(table)
    for r in result["results"]:
        if r["scenario"] == "hostile_delay":
            console.print(f"hostile_delay: baseline latency {r['baseline_median_s']} s; under attack "
                          f"{r['latency_under_attack_s']} s; largest delay {r['max_delay_s']} s = "
                          f"{r['delay_ratio']} x the gate time budget ({r['gate_time_budget_s']:g} s)")
            for name, h in r["hostile"].items():
                console.print(f"  {name}: {h['reason_code']} ({h['limit'] or '-'}) at {h['failed_gate']}, "
                              f"slowest gate {h['slowest_gate_s']} s")
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")
    if any(r["lost"] or r["paid_twice"] or r["ledger_mismatch"] for r in result["results"]):
        raise typer.Exit(1)
    if any((r.get("delay_ratio") or 0) > 1 for r in result["results"]):
        raise typer.Exit(1)  # another miner waited longer than one budget



@bench_app.command("train")
def bench_train(
    clips: Path | None = typer.Option(None, "--clips", help="XGen clips (default: generate a small set)"),
    num_envs: int = typer.Option(16, help="N: environments of the batched figure and of training"),
    teacher_seconds: float = typer.Option(600.0, help="teacher training wall clock (0: env-steps/s and baselines only)"),
    student_seconds: float = typer.Option(0.0, help="each student's (MoCap, NEP) training wall clock"),
    steps: int = typer.Option(60, help="control steps per env-steps/s figure"),
    full_body: bool = typer.Option(False, help="also measure the full-body task's env-steps/s"),
    seed: int = typer.Option(0, help="training seed (a second seed shows the run-to-run spread)"),
    teacher: Path | None = typer.Option(None, "--teacher", help="a trained teacher checkpoint: evaluate it and "
                                        "train the students from it instead of training one"),
    json_out: Path | None = typer.Option(None, "--json", help="write the result JSON here"),
) -> None:
    """XMimic on this machine: env-steps/s for 1 and N envs, baseline SR/GSR, and the SR/GSR
    a time-boxed CPU teacher (and students) reach.

    Example: kibotos bench train --teacher-seconds 600 --student-seconds 150 --json benchmarks/results/train.json
    """
    from benchmarks.train import run_train_bench, write_json

    try:
        result = run_train_bench(clips, num_envs=num_envs, teacher_seconds=teacher_seconds,
                                 student_seconds=student_seconds, steps=steps, seed=seed, teacher=teacher,
                                 tasks=("arms_only", "full_body") if full_body else ("arms_only",),
                                 progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    except KibotosError as exc:
        _fail(exc)
    print(json.dumps(result, indent=2))
    if json_out:
        console.print(f"wrote {write_json(result, json_out)}")

def main() -> None:
    try:
        app()
    except BrokenPipeError:  # last resort: output not written through cli_output.emit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by the closed pipe
    except KibotosError as exc:  # last resort: a domain error never prints a traceback
        err.print(f"[red]error[/red] {escape(f'[{exc.reason_code}] {exc}')}")
        sys.exit(2)


if __name__ == "__main__":
    main()
