"""Apply the ClickHouse DDL in ``infra/clickhouse/migrations/`` exactly once per database.

Migrations are plain SQL files named ``NNNN_<name>.sql``, applied in name order; each
applied file is recorded in ``kibotos.schema_migrations`` with its checksum. Running
again applies only new files, so every entry point can call ``apply_migrations`` on
start. An applied file must never change (write a new migration instead): a changed
checksum is an error rather than a silent divergence between environments.

Statements are split on ``;`` at the end of a line, so a migration must not put a
line-ending ``;`` inside a string literal. Statements should be idempotent
(``IF NOT EXISTS``) so that a run interrupted mid-file can simply be repeated.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from kibotos.errors import ServiceError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "clickhouse" / "migrations"
DATABASE = "kibotos"

_BOOTSTRAP = (
    f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
    f"""CREATE TABLE IF NOT EXISTS {DATABASE}.schema_migrations
    (
        version     String,
        name        String,
        checksum    String,
        applied_at  DateTime64(3, 'UTC') DEFAULT now64(3)
    )
    ENGINE = ReplacingMergeTree
    ORDER BY version""",
)


def split_statements(sql: str) -> list[str]:
    """SQL text → statements, without ``--`` comment lines and empty statements."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*$", "\n".join(lines), flags=re.MULTILINE)
    return [part.strip() for part in parts if part.strip()]


def applied_migrations(client) -> dict[str, str]:
    """``{version: checksum}`` of the migrations recorded as applied."""
    rows = client.query(f"SELECT version, checksum FROM {DATABASE}.schema_migrations FINAL").result_rows
    return dict(rows)


def apply_migrations(client, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations through a clickhouse-connect ``client``.

    :returns: file names applied by this call (empty when already up to date).
    :raises ServiceError: a statement failed, or an applied migration was edited.
    """
    try:
        for statement in _BOOTSTRAP:
            client.command(statement)
        done = applied_migrations(client)
    except Exception as exc:
        raise ServiceError(f"cannot prepare {DATABASE}.schema_migrations: {exc}") from exc
    applied = []
    for path in sorted(Path(migrations_dir).glob("*.sql")):
        version, _, name = path.stem.partition("_")
        sql = path.read_text()
        checksum = hashlib.sha256(sql.encode()).hexdigest()
        if version in done:
            if done[version] != checksum:
                raise ServiceError(
                    f"migration {path.name} changed after it was applied; add a new migration instead"
                )
            continue
        for statement in split_statements(sql):
            try:
                client.command(statement)
            except Exception as exc:
                raise ServiceError(f"migration {path.name} failed on:\n{statement}\n{exc}") from exc
        client.insert(
            f"{DATABASE}.schema_migrations", [[version, name, checksum]], column_names=["version", "name", "checksum"]
        )
        applied.append(path.name)
    return applied
