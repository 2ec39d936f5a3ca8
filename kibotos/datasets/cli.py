"""``kibotos datasets …`` and ``kibotos attribution``: create, build, list, show, export
datasets; each miner's share of a dataset version or of a policy."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

datasets_app = typer.Typer(no_args_is_help=True, help="Datasets: versioned, attributed sets of accepted episodes.")
_out = Console() if Console().is_terminal else Console(width=160)
_err = Console(stderr=True)


def _fail(exc) -> None:
    _err.print(f"[red]error[/red] {escape(f'[{exc.reason_code}] {exc}')}")
    raise typer.Exit(2)


def _settings():
    from kibotos.config.settings import Settings

    return Settings()


def _store(root: Path | None):
    """The dataset store: ``root`` (default ``$KIBOTOS_HOME/datasets``) as the local cache
    of the configured object store, where versions and exports are published."""
    from kibotos.datasets.store import DatasetStore
    from kibotos.objectstore import store_from_settings

    settings = _settings()
    return DatasetStore(root or settings.home / "datasets", objects=store_from_settings(settings))


def _build(store, name: str, idle_s: float) -> list[dict]:
    """Publish what the sources hold for ``name``: through the running stack's builder
    when ``kibotos up`` runs (its consumer group is that builder's), else here until idle."""
    from kibotos.reports.reads import bootstrap_for
    from kibotos.runtime.stack import running_stack
    from streams.dataset_builder import build_until_idle, group_id
    from topics.admin import ensure_topics
    from topics.catalogue import Catalogue

    settings = _settings()
    if running_stack(settings) is not None and store.root.resolve() == (settings.home / "datasets").resolve():
        from kibotos.datasets.requests import request_publish

        body = request_publish(store, name)
        _out.print(f"{name} (the running stack's builder): "
                   + (", ".join(f"{k} {v}" for k, v in sorted(body["outcomes"].items())) or "no records"))
        return [store.info(name, body["published"])] if body["published"] else []
    bootstrap = bootstrap_for(settings)
    catalogue = Catalogue.from_settings(settings)
    ensure_topics(bootstrap, catalogue.all())
    proc = build_until_idle(store, name, catalogue, bootstrap, group_id(settings.consumer_group_prefix, catalogue, name),
                            idle_s=idle_s)
    _out.print(f"{name}: " + (", ".join(f"{k} {v}" for k, v in sorted(proc.outcomes.items())) or "no records"))
    return proc.published


@datasets_app.command("create")
def create(spec: Path = typer.Option(..., "--spec", help="dataset spec (YAML/JSON): name, robots, tasks, min_score, "
                                                          "decided_from/until, miners, sources"),
           build: bool = typer.Option(True, "--build/--no-build",
                                      help="publish the first version now: through the running stack's builder, "
                                           "else by reading the sources here (needs a broker)"),
           idle: float = typer.Option(3.0, help="--build: stop after this many seconds without a record"),
           root: Path | None = typer.Option(None, help="datasets directory (default: $KIBOTOS_HOME/datasets)")) -> None:
    """Register a dataset spec; with --build, publish its first version from the sources.

    Example: kibotos datasets create --spec panda.yaml
    """
    from kibotos.datasets.spec import load_spec
    from kibotos.errors import KibotosError

    store = _store(root)
    try:
        s = load_spec(spec)
        created = store.create(s)
        _out.print(f"{'created' if created else 'exists (same spec)'}: {s.name} (spec {s.spec_hash[:12]})")
        if build:
            for info in _build(store, s.name, idle):
                _out.print(f"published {s.name}@v{info['version']}: {info['episodes']} episodes, "
                           f"content hash {info['content_hash']}")
    except KibotosError as exc:
        _fail(exc)


@datasets_app.command("build")
def build_cmd(name: str, idle: float = typer.Option(3.0, help="stop after this many seconds without a record"),
              root: Path | None = typer.Option(None)) -> None:
    """Read the dataset's sources until idle and publish a version if anything changed
    (``python -m streams.dataset_builder`` does this continuously).

    Example: kibotos datasets build panda
    """
    from kibotos.errors import KibotosError

    try:
        published = _build(_store(root), name, idle)
    except KibotosError as exc:
        _fail(exc)
    for info in published:
        _out.print(f"published {name}@v{info['version']}: {info['episodes']} episodes (+{info['added']} "
                   f"-{info['removed']}), content hash {info['content_hash']}")
    if not published:
        _out.print("nothing new: no version published")


@datasets_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json"), root: Path | None = typer.Option(None)) -> None:
    """Every dataset with its latest version.

    Example: kibotos datasets list
    """
    store = _store(root)
    rows = []
    for name in store.names():
        v = store.latest(name)
        info = store.info(name, v) if v else {}
        rows.append({"dataset": name, "latest_version": v, "episodes": info.get("episodes", 0),
                     "content_hash": info.get("content_hash"), "created_at": info.get("created_at"),
                     "description": store.spec(name).description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title="datasets")
    for c in ("dataset", "version", "episodes", "content hash", "published", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["dataset"], str(r["latest_version"] or "–"), str(r["episodes"]), (r["content_hash"] or "")[:16],
                  r["created_at"] or "", r["description"])
    _out.print(t)


@datasets_app.command("show")
def show(ref: str = typer.Argument(..., help="NAME or NAME@vN"), as_json: bool = typer.Option(False, "--json"),
         html: Path | None = typer.Option(None, "--html", help="write the dataset page here"),
         verify: bool = typer.Option(True, "--verify/--no-verify", help="recompute the content hash"),
         root: Path | None = typer.Option(None)) -> None:
    """A version's card: S distribution, coverage, attribution, changelog.

    Example: kibotos datasets show panda@v2 --html panda.html
    """
    from kibotos.datasets.attribution import shares
    from kibotos.errors import KibotosError

    store = _store(root)
    try:
        name, v = store.resolve(ref)
    except KibotosError as exc:
        _fail(exc)
    ok = store.verify(name, v) if verify else None
    if html is not None:
        from kibotos.datasets.html import render_version_page

        d = store.version_dir(name, v)
        downloads = {f: (d / f).resolve().as_uri() for f in ("card.md", "card.json", "episodes.jsonl",
                                                               "changelog.jsonl", "attribution.json")}
        from urllib.parse import quote

        from kibotos.runtime.stack import running_stack

        state = running_stack(_settings())  # report links go to the running read API's pages
        base = state["query_url"] if state else ""
        html.write_text(render_version_page(store, name, v, downloads=downloads,
                                            report_href=lambda sid: f"{base}/reports/{quote(sid)}.html"),
                        encoding="utf-8")
        _out.print(f"wrote {html}")
        return
    card = store.card(name, v)
    if as_json:
        print(json.dumps({"version": store.info(name, v), "card": card, "hash_ok": ok}, indent=2))
        return
    _out.print((d := store.version_dir(name, v) / "card.md").read_text())
    _out.print(f"content hash {'verified' if ok else 'NOT MATCHING' if ok is False else 'not checked'}; "
               f"files in {d.parent}")
    t = Table(title="attribution (S-weighted share of the episodes)")
    for c in ("miner", "episodes", "share", "attribution points"):
        t.add_column(c)
    for r in shares(store.episodes(name, v)):
        t.add_row(r["miner_id"], str(r["episodes"]), f"{100 * r['share']:.1f}%", f"{r['attribution_points']:.3f}")
    _out.print(t)
    if ok is False:
        raise typer.Exit(1)


@datasets_app.command("export")
def export(ref: str = typer.Argument(..., help="NAME or NAME@vN"),
           fmt: list[str] = typer.Option(["lerobot", "humanx"], "--format", help="lerobot and/or humanx; repeatable"),
           out: Path | None = typer.Option(None, help="export directory (default: $KIBOTOS_HOME/exports)"),
           force: bool = typer.Option(False, "--force", help="write again even if this export exists"),
           root: Path | None = typer.Option(None)) -> None:
    """Export a version to LeRobot v3.0 datasets and/or HumanX clips (idempotent).

    Example: kibotos datasets export panda@v2 --format lerobot --out exports/
    """
    from kibotos.errors import KibotosError
    from kibotos.export.runner import export_dir, export_version
    from kibotos.objectstore import store_from_settings

    settings = _settings()
    store = _store(root)
    try:
        name, v = store.resolve(ref)
        res = export_version(store, name, v, out or settings.home / "exports", store_from_settings(settings),
                             tuple(fmt), force=force)
    except KibotosError as exc:
        _fail(exc)
    where = export_dir(out or settings.home / "exports", name, v)
    _out.print(f"{'reused' if res['reused'] else 'exported'} {name}@v{v} ({', '.join(res['formats'])}): "
               f"{res['exported']}/{res['episodes']} episodes, {len(res['files'])} files in {where}")
    for group, g in res.get("lerobot", {}).items():
        _out.print(f"  LeRobot v3.0 {group}: {g['episodes']} episodes, {g['frames']} frames")
    for s in res["skipped"]:
        _out.print(f"  [yellow]skipped[/yellow] {s['submission_id']}: {s['reason_code']}")


def attribution_cmd(target: str = typer.Argument(..., help="NAME, NAME@vN, policy:POLICY_ID (or a policy id "
                                                          "that is no dataset name)"),
                    as_json: bool = typer.Option(False, "--json"),
                    root: Path | None = typer.Option(None, help="datasets directory")) -> None:
    """Each miner's share of a dataset version or of a policy, and the attribution points paid.

    Example: kibotos attribution panda@v2
    Example: kibotos attribution policy:cargo-ppo-7
    """
    from kibotos.datasets.attribution import shares
    from kibotos.datasets.policy import get_policy, policy_shares
    from kibotos.errors import KibotosError

    store = _store(root)
    try:
        if not target.startswith("policy:") and "@" not in target:  # a bare policy id (kibotos attribution POLICY)
            from kibotos.datasets.policy import POLICY_ID_RE, policy_path

            if POLICY_ID_RE.match(target) and target not in store.names() and policy_path(store, target).exists():
                target = f"policy:{target}"
        if target.startswith("policy:"):
            pid = target.split(":", 1)[1]
            rec = get_policy(store, pid)
            rows = policy_shares(store, pid)
            paid = {e["miner_id"]: e["points"] for e in rec["attribution"]}
            for r in rows:
                r["attribution_points"] = paid.get(r["miner_id"], 0.0)
            title = (f"policy {pid} (trained on {', '.join(rec['trained_on'])}; evaluation "
                     f"{'passed' if rec['evaluation']['passed'] else 'failed'})")
        else:
            name, v = store.resolve(target)
            rows = shares(store.episodes(name, v))
            title = f"{name}@v{v} (rule {store.info(name, v)['rule_version']})"
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps({"target": title, "miners": rows}, indent=2))
        return
    t = Table(title=f"attribution: {title}")
    for c in ("miner", "episodes", "S sum", "share", "attribution points"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["miner_id"], str(r["episodes"]), f"{r['score_sum']:.3f}", f"{100 * r['share']:.1f}%",
                  f"{r['attribution_points']:.3f}")
    _out.print(t)


def bench_export_cmd(episodes: int = typer.Option(1000, "--episodes", min=1, help="episodes in the version"),
                     pool: int = typer.Option(6, "--pool", min=1, help="distinct sample bundles the episodes share"),
                     fmt: list[str] = typer.Option(["lerobot", "humanx"], "--format"),
                     json_out: Path | None = typer.Option(None, "--json", help="also write the result here")) -> None:
    """Publishing and exporting a dataset version vs reading the same bundles: episodes/s,
    the export/read ratio, and peak memory growth at N and N/10 episodes (streaming).

    Example: kibotos bench export --episodes 10000 --json benchmarks/results/export.json
    """
    from benchmarks.export import run_export_bench, write_json

    res = run_export_bench(episodes, pool, tuple(fmt), progress=lambda m: _err.print(f"[dim]{m}[/dim]"))
    t = Table(title=f"dataset export, {episodes} episodes over {pool} bundles ({res['machine'].get('cpus')} CPUs)")
    for c in ("stage", "episodes", "wall s", "episodes/s", "peak RSS growth MB"):
        t.add_column(c)
    for name, s in res["stages"].items():
        t.add_row(name, str(s["episodes"]), f"{s['wall_s']:.2f}", f"{s['episodes_per_s']:.1f}",
                  f"{s['peak_rss_growth_mb']:.1f}")
    _out.print(t)
    for k, v in res["ratios"].items():
        _out.print(f"{k}: {v}x")
    if json_out:
        _out.print(f"wrote {write_json(res, json_out)}")
