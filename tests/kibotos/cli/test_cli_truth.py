"""The CLI says only what is true: ``verify`` names its scope, ``sample --help`` lists the
variants, ``report`` validates ids and explains an empty store, ``ledger`` never cuts ids,
and a closed pipe (``| head``) keeps a command's exit code."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kibotos.cli.main import SAMPLE_VARIANTS, app
from kibotos.cli.output import PipeConsole, print_rows
from kibotos.synthetic.samples import VARIANTS
from tests.fixtures.episodes import PANDA


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "240", "NO_COLOR": "1"})


def test_verify_says_it_ran_gates_a_to_e_only(runner, samples):
    human = runner.invoke(app, ["verify", str(samples.path(PANDA))])
    assert human.exit_code == 0, human.output
    assert "gates A-E only" in human.stdout and "not a final verdict" in human.stdout
    as_json = runner.invoke(app, ["verify", str(samples.path(PANDA)), "--json"])
    assert as_json.exit_code == 0
    assert as_json.stdout.lstrip().startswith("{") and "gates A-E only" in as_json.stderr  # stdout stays JSON


def test_sample_help_lists_every_variant(runner):
    assert [v.strip() for v in SAMPLE_VARIANTS.split(",")] == list(VARIANTS)
    result = runner.invoke(app, ["sample", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in VARIANTS:
        assert name in text, name


@pytest.mark.parametrize("bad", ["abc", "1234", "' OR 1=1 --", "0787f2c0-bf31-5b9d-8dbd"])
def test_report_refuses_a_malformed_id(runner, tmp_path, bad):
    result = runner.invoke(app, ["report", bad], env={"KIBOTOS_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "invalid_submission_id" in result.stderr and "not a submission id" in result.stderr
    assert not (tmp_path / "chdb").exists()  # refused before any store is opened


def test_report_explains_a_store_that_was_never_created(runner, tmp_path):
    sid = str(uuid.uuid4())
    result = runner.invoke(app, ["report", sid.upper()], env={"KIBOTOS_HOME": str(tmp_path)})
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())
    assert sid in text and "no warehouse at" in text and "kibotos up" in text and "kibotos verify" in text


def test_report_explains_an_empty_store(runner, tmp_path):
    from kibotos.warehouse import open_client

    client = open_client(f"chdb://{(tmp_path / 'chdb').resolve()}")  # created, but no tables, no reports
    client.close()
    result = runner.invoke(app, ["report", str(uuid.uuid4())], env={"KIBOTOS_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "holds no reports yet" in " ".join(result.stderr.split())


def _rows(n: int = 3) -> list[dict]:
    return [{"entry_id": str(uuid.uuid4()), "miner_id": f"miner-{'x' * 20}-{i}", "submission_id": str(uuid.uuid4()),
             "kind": "reward", "points": 12.5 + i, "config_version": "scoring-2026.12.3",
             "created_at": "2026-12-05T20:00:00.000Z"} for i in range(n)]


@pytest.mark.parametrize("width", [40, 80, 120, 300])
def test_ledger_rows_never_cut_an_id(width):
    rows = _rows()
    buf = io.StringIO()
    print_rows(Console(file=buf, width=width, no_color=True), rows)
    text = buf.getvalue()
    assert "…" not in text
    for r in rows:
        assert r["entry_id"] in text and r["submission_id"] in text and r["miner_id"] in text


def test_a_closed_pipe_keeps_the_console_quiet_and_the_process_alive():
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

    con = PipeConsole(file=Closed())
    con.print("hello")  # rich's own Console would raise SystemExit(1) here
    assert con.quiet


@pytest.mark.parametrize("as_json", [False, True])
def test_verify_piped_into_head_keeps_its_exit_code(samples, as_json):
    """``kibotos verify | head -1``: the verdict's exit code, no traceback."""
    cmd = [sys.executable, "-c", "from kibotos.cli.main import main; main()", "verify", str(samples.path(PANDA))]
    if as_json:
        cmd.append("--json")
    env = dict(os.environ, COLUMNS="240", NO_COLOR="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line, as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
