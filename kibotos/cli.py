"""The ``kibotos`` command line. One command = one function; domain errors become exit
codes with a one-line message, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from kibotos.errors import KibotosError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Kibotos: verify, score and reward robot demonstrations.")
bundle_app = typer.Typer(no_args_is_help=True, help="Inspect submission bundles.")
app.add_typer(bundle_app, name="bundle")
console = Console()
err = Console(stderr=True)


def _fail(exc: KibotosError, code: int = 2) -> None:
    err.print(f"[red]error[/red] [{exc.reason_code}] {exc}")
    raise typer.Exit(code)


@app.command()
def verify(
    path: Path = typer.Argument(..., help="bundle: *.zarr.zip or a Zarr directory"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON report"),
    config: Optional[Path] = typer.Option(None, help="gate thresholds YAML (default: packaged)"),
) -> None:
    """Run gates A–E in-process on one bundle (no broker, no database).

    Exit code 0 accepted, 1 rejected, 2 unreadable input.

    Example: kibotos verify episode.zarr.zip --json
    """
    from kibotos.gate_config import load_config
    from kibotos.verify import verify_path

    try:
        outcome = verify_path(path, load_config(config))
    except KibotosError as exc:
        _fail(exc)
    report = outcome.report
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        from kibotos.render import print_report

        print_report(console, report)
    raise typer.Exit(outcome.exit_code)


@app.command()
def sample(
    out: Path = typer.Option(Path("samples"), help="output directory"),
    robot: list[str] = typer.Option([], help="robot_model_id[@revision]; repeatable (default: all)"),
    variant: list[str] = typer.Option([], help="genuine or a failure class; repeatable (default: all)"),
    seed: int = typer.Option(0),
    miner: str = typer.Option("miner-sample", help="miner_id written into the manifests"),
) -> None:
    """Write realistic sample episodes (genuine and one per failure class).

    Example: kibotos sample --out samples --robot franka_panda --variant genuine --variant teleport
    """
    from kibotos.robots import list_robots
    from kibotos.samples import VARIANTS, write_samples

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
        print(json.dumps({"manifest": manifest, "arrays": [a.__dict__ for a in arrays]}, indent=2, default=str))
        return
    console.print_json(json.dumps(manifest, default=str))
    table = Table("stream", "shape", "dtype", "bytes")
    for a in arrays:
        table.add_row(a.path, str(a.shape), a.dtype, f"{a.nbytes:,}")
    console.print(table)


def main() -> None:
    try:
        app()
    except KibotosError as exc:  # last resort: a domain error never prints a traceback
        err.print(f"[red]error[/red] [{exc.reason_code}] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
