"""Migrations apply once, are recorded, and refuse edited history (real chdb)."""

from __future__ import annotations

import shutil

import pytest

from infra.migrate import MIGRATIONS_DIR, applied_migrations, apply_migrations, split_statements
from kibotos.errors import ServiceError

pytestmark = pytest.mark.integration

TABLES = {"submissions", "gate_results", "verification_reports", "points_ledger", "dead_letters", "schema_migrations",
          "ingest_receipts", "training_runs", "training_progress", "policies", "policy_evals"}
SHIPPED = {p.stem.partition("_")[0] for p in MIGRATIONS_DIR.glob("*.sql")}


def _tables(client) -> set[str]:
    return {row[0] for row in client.query("SHOW TABLES FROM kibotos").result_rows}


def test_fixture_applied_every_table(chdb_client):
    assert TABLES <= _tables(chdb_client)
    assert set(applied_migrations(chdb_client)) == SHIPPED


def test_second_run_applies_nothing(chdb_client):
    assert apply_migrations(chdb_client) == []
    rows = chdb_client.query("SELECT count() FROM kibotos.schema_migrations").result_rows
    assert rows == [(len(SHIPPED),)]


def test_new_migration_applies_once(chdb_client, tmp_path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "m")
    (tmp_path / "m" / "9001_extra.sql").write_text(
        "-- a comment line\nCREATE TABLE IF NOT EXISTS kibotos.extra (x Int32)\nENGINE = MergeTree ORDER BY x;\n"
    )
    assert apply_migrations(chdb_client, tmp_path / "m") == ["9001_extra.sql"]
    assert apply_migrations(chdb_client, tmp_path / "m") == []
    assert "extra" in _tables(chdb_client)


def test_edited_applied_migration_is_refused(chdb_client, tmp_path):
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "m")
    with open(tmp_path / "m" / "0001_init.sql", "a") as f:
        f.write("\n-- sneaky edit\n")
    with pytest.raises(ServiceError, match="changed after it was applied"):
        apply_migrations(chdb_client, tmp_path / "m")


def test_failing_statement_is_a_service_error_and_not_recorded(chdb_client, tmp_path):
    (tmp_path / "m").mkdir()
    shutil.copy(MIGRATIONS_DIR / "0001_init.sql", tmp_path / "m")
    (tmp_path / "m" / "9002_broken.sql").write_text("CREATE TABLE kibotos.broken (x NoSuchType) ENGINE = Log;\n")
    with pytest.raises(ServiceError, match="9002_broken.sql"):
        apply_migrations(chdb_client, tmp_path / "m")
    assert "9002" not in applied_migrations(chdb_client)


def test_split_statements():
    sql = "-- header\nCREATE A;\n\n-- b\nCREATE B\n  (x);  \nSELECT 'a;b'\n"
    assert split_statements(sql) == ["CREATE A", "CREATE B\n  (x)", "SELECT 'a;b'"]
