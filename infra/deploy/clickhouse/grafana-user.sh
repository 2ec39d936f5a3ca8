#!/bin/bash
# Run once by the ClickHouse image on an empty data directory (/docker-entrypoint-initdb.d):
# a read-only user for Grafana. The plugin needs to set max_execution_time, so it stays
# changeable under readonly=1.
set -euo pipefail
clickhouse client --user "$CLICKHOUSE_USER" --password "$CLICKHOUSE_PASSWORD" --multiquery <<SQL
CREATE SETTINGS PROFILE IF NOT EXISTS grafana_readonly
    SETTINGS readonly = 1, max_execution_time = 60 CHANGEABLE_IN_READONLY;
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY '${GRAFANA_CLICKHOUSE_PASSWORD}'
    SETTINGS PROFILE 'grafana_readonly';
GRANT SELECT ON kibotos.* TO grafana;
SQL
