"""``kibotos miner``: a miner's identity, bundle signatures and signed uploads.

Workflow: ``keygen`` (once) → write bundles whose manifest ``miner_id`` is ``kibotos miner
id`` → ``sign`` (writes ``<bundle>.sig.json``) → ``submit`` (presigned upload + complete
through the ingest API) → ``report`` / ``ledger``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from kibotos.cli.output import emit, make_console
from kibotos.errors import KibotosError

DEFAULT_KEYPAIR = Path("~/.config/kibotos/miner-keypair.json")

miner_app = typer.Typer(no_args_is_help=True, help="Miner identity, bundle signing and signed uploads.")
console = make_console()  # a closed pipe keeps the command's exit code
err = Console(stderr=True)

KEYPAIR_OPTION = typer.Option(DEFAULT_KEYPAIR, "--keypair", "-k", help="Solana-format keypair file (JSON, 64 bytes)")
API_OPTION = typer.Option(None, "--api", help="ingest API base URL (default: KIBOTOS_INGEST_URL or the running stack)")


def _fail(exc: KibotosError, code: int = 2) -> None:
    err.print(f"[red]error[/red] {escape(f'[{exc.reason_code}] {exc}')}")
    raise typer.Exit(code)


def _keypair(path: Path):
    from kibotos.identity import Keypair

    try:
        return Keypair.load(path.expanduser())
    except KibotosError as exc:
        _fail(exc)


def _api(api: str | None) -> str:
    from kibotos.config.settings import Settings
    from kibotos.runtime.stack import running_stack

    if api:
        return api
    try:
        settings = Settings()
    except Exception as exc:
        _fail(KibotosError(f"invalid settings: {exc}", reason_code="config_invalid"))
    if settings.ingest_url:
        return settings.ingest_url
    state = running_stack(settings) or {}
    if not state.get("ingest_url"):
        _fail(KibotosError("no ingest API: pass --api, set KIBOTOS_INGEST_URL, or start `kibotos up`",
                           reason_code="service_unavailable"))
    return state["ingest_url"]


@miner_app.command()
def keygen(
    out: Path = typer.Option(DEFAULT_KEYPAIR, "--out", "-o", help="where to write the keypair (mode 0600)"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing keypair"),
) -> None:
    """Create an Ed25519 miner identity (a Solana-compatible keypair file) and print its miner id.

    Example: kibotos miner keygen --out miner.json
    """
    from kibotos.identity import Keypair

    pair = Keypair.generate()
    try:
        path = pair.save(out.expanduser(), overwrite=force)
    except KibotosError as exc:
        _fail(exc)
    err.print(f"wrote {path} (keep it secret)")
    emit(pair.miner_id)


@miner_app.command("id")
def miner_id(keypair: Path = KEYPAIR_OPTION) -> None:
    """Print the miner id (base58 public key) of a keypair: put it in manifests' miner_id.

    Example: kibotos sample --out samples --miner "$(kibotos miner id -k miner.json)"
    """
    emit(_keypair(keypair).miner_id)


@miner_app.command()
def sign(
    bundles: list[Path] = typer.Argument(..., help="bundles (*.zarr.zip or Zarr directories)"),
    keypair: Path = KEYPAIR_OPTION,
) -> None:
    """Hash each bundle (Merkle tree over every dataset) and sign it: writes <bundle>.sig.json.

    Example: kibotos miner sign samples/*.zarr.zip -k miner.json
    """
    from kibotos.identity import sidecar_path, sign_bundle

    pair = _keypair(keypair)
    failed = 0
    for path in bundles:
        try:
            sig = sign_bundle(path, pair)
        except KibotosError as exc:
            failed += 1
            err.print(f"[red]not signed[/red] {escape(f'{path}: [{exc.reason_code}] {exc}')}")
            continue
        console.print(f"{sig.submission_id}  root {sig.merkle_root[:16]}…  {sidecar_path(path)}")
    raise typer.Exit(1 if failed else 0)


@miner_app.command()
def submit(
    bundles: list[Path] = typer.Argument(..., help="bundles to upload (their .sig.json sidecars travel with them)"),
    keypair: Path = KEYPAIR_OPTION,
    api: str | None = API_OPTION,
    wait: bool = typer.Option(False, "--wait", help="wait for each verdict and print it"),
    timeout: float = typer.Option(600.0, help="seconds to wait for a verdict, or through rate limits"),
) -> None:
    """Upload signed bundles through the ingest API (presigned PUT, then complete).

    A bundle without a sidecar is signed on the fly. Exit code 0: all accepted (with
    --wait: all verdicts accepted), 1: something was rejected, 2: an error.

    Example: kibotos miner submit samples/*.zarr.zip -k miner.json --wait
    """
    from kibotos.ingest.client import IngestClient

    pair = _keypair(keypair)
    rejected = 0
    try:
        with IngestClient(_api(api)) as client:
            outcomes = []
            for path in bundles:
                out = client.submit(path, pair, max_wait_s=timeout)  # rate limited: wait, then go on
                outcomes.append(out)
                if out.accepted:
                    how = "resumed (stuck without a verdict): sent to verification again" if out.resumed \
                        else "accepted for verification"
                    console.print(f"{out.submission_id}  [green]{how}[/green]  {path}")
                else:
                    rejected += 1
                    console.print(f"{out.submission_id}  [red]refused[/red] "
                                  + escape(f"({out.status}) [{out.reason_code}] {out.detail}  {path}"))
            if wait:
                for out in outcomes:
                    if not out.accepted or out.upload_id is None:  # the API returns an accepted upload's id
                        continue
                    # this upload's own verdict: not another upload's under the same submission id
                    rep = client.wait_upload(out.upload_id, timeout)
                    ok = rep.get("verdict") == "accepted"
                    rejected += 0 if ok else 1
                    colour = "green" if ok else "red"
                    console.print(f"{out.submission_id}  verdict [{colour}]{rep.get('verdict') or rep['status']}"
                                  f"[/{colour}] {rep.get('reason_code') or ''} {rep.get('failed_gate') or ''} "
                                  f"points {rep.get('points') or 0:g}")
    except KibotosError as exc:
        _fail(exc)
    raise typer.Exit(1 if rejected else 0)


@miner_app.command()
def report(submission_id: str, api: str | None = API_OPTION,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Fetch a submission's report (with its ingestion receipt) from the ingest API.

    Example: kibotos miner report 0787f2c0-bf31-5b9d-8dbd-f197dfa63fe4 --json
    """
    from kibotos.ingest.client import IngestClient, IngestRefused

    try:
        with IngestClient(_api(api)) as client:
            rep = client.fetch_report(submission_id)
    except IngestRefused as exc:
        if exc.status != 404:
            _fail(exc)
        err.print(escape(f"no verdict for {submission_id} [{exc.reason_code}]: {exc}"))
        for attempt in exc.body.get("details", {}).get("rejected_uploads", []):
            # attempts are not the submission's verdict: anyone may upload under any id
            err.print(escape(f"  upload {attempt['upload_id']} by {attempt['miner_id']} rejected at ingestion: "
                             f"[{attempt['reason_code']}]"))
        raise typer.Exit(1) from None
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        emit(json.dumps(rep, indent=2, default=str))
        return
    from kibotos.media.render import print_report
    from kibotos.reports.model import VerificationReport

    print_report(console, VerificationReport.model_validate({k: v for k, v in rep.items()
                                                              if k in VerificationReport.model_fields}))
    ingest = rep.get("ingest") or {}
    if ingest:
        console.print(f"ingest: {ingest.get('status')}  merkle_root {ingest.get('merkle_root')}  "
                      f"manifest_sha256 {ingest.get('manifest_sha256')}")


@miner_app.command()
def ledger(keypair: Path = KEYPAIR_OPTION, miner: str | None = typer.Option(None, help="another miner id"),
           api: str | None = API_OPTION, as_json: bool = typer.Option(False, "--json")) -> None:
    """A miner's points ledger and balance, from the ingest API.

    Example: kibotos miner ledger -k miner.json
    """
    from kibotos.ingest.client import IngestClient

    who = miner or _keypair(keypair).miner_id
    try:
        with IngestClient(_api(api)) as client:
            led = client.ledger(who)
    except KibotosError as exc:
        _fail(exc)
    if as_json:
        emit(json.dumps(led, indent=2, default=str))
        return
    console.print(f"{led['miner_id']}  balance {led['balance']:g} points  ({len(led['entries'])} entries)")
    for e in led["entries"]:
        console.print(f"  {e['created_at']}  {e['submission_id']}  {e['kind']}  {e['points']:+g}")
