"""``kibotos miner keygen | id | sign | submit | report | ledger`` against a live ingest API."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kibotos.cli.main import app
from kibotos.identity import Keypair, sidecar_path

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_keygen_sign_submit_report(ingest, signed, tmp_path, monkeypatch):
    key = tmp_path / "miner.json"
    out = invoke("miner", "keygen", "--out", str(key))
    assert out.exit_code == 0
    pair = Keypair.load(key)
    assert pair.miner_id in out.stdout
    assert invoke("miner", "keygen", "--out", str(key)).exit_code == 2  # never overwrites a key
    assert invoke("miner", "id", "-k", str(key)).stdout.strip() == pair.miner_id

    bundle = signed.write(pair, sign=False)
    out = invoke("miner", "sign", str(bundle), "-k", str(key))
    assert out.exit_code == 0 and sidecar_path(bundle).exists()
    sid = json.loads(sidecar_path(bundle).read_text())["submission_id"]

    unsigned = signed.write(pair, sign=False)  # signed on the fly by submit
    out = invoke("miner", "submit", str(bundle), str(unsigned), "-k", str(key), "--api", ingest.url)
    assert out.exit_code == 0, out.stdout
    assert out.stdout.count("accepted for verification") == 2 and sid in out.stdout

    out = invoke("miner", "submit", str(bundle), "-k", str(key), "--api", ingest.url)
    assert out.exit_code == 1 and "bundle_replayed" in out.stdout

    # the legacy command takes the signed path when given a keypair
    monkeypatch.setenv("KIBOTOS_INGEST_URL", ingest.url)
    out = invoke("submit", str(signed.write(pair)), "--keypair", str(key))
    assert out.exit_code == 0 and "accepted for verification" in out.stdout

    out = invoke("miner", "report", sid, "--api", ingest.url)
    assert out.exit_code == 1  # accepted at ingestion, no verdict yet (no gate workers here)
    out = invoke("miner", "ledger", "-k", str(key), "--api", ingest.url, "--json")
    assert json.loads(out.stdout) == {"miner_id": pair.miner_id, "balance": 0.0, "entries": []}


def test_signing_someone_elses_bundle_fails_with_a_reason(signed, tmp_path):
    key = tmp_path / "eve.json"
    invoke("miner", "keygen", "--out", str(key))
    other = Keypair.generate()
    out = invoke("miner", "sign", str(signed.write(other, sign=False)), "-k", str(key))
    assert out.exit_code == 1 and "signer_mismatch" in out.stderr
    out = invoke("miner", "id", "-k", str(tmp_path / "missing.json"))
    assert out.exit_code == 2 and "keypair_invalid" in out.stderr
