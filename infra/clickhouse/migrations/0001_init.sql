-- Kibotos warehouse: submissions, per-gate results, verification reports, points ledger,
-- dead letters. Written only by the ClickHouse sink (streams/sink.py), in batches.
--
-- Delivery is at-least-once, so every table is a ReplacingMergeTree keyed by a natural or
-- deterministic id: a redelivered row replaces its twin at merge time, and readers that
-- need exact answers use FINAL (see kibotos/warehouse.py). Where a later decision may
-- supersede an earlier one (re-verification under a new config), decided_at is the
-- version column so the latest decision wins whatever the arrival order.
-- Timestamps are UTC, millisecond precision, like the events' epoch-millis fields.

CREATE DATABASE IF NOT EXISTS kibotos;

CREATE TABLE IF NOT EXISTS kibotos.submissions
(
    submission_id      String,
    miner_id           String,
    bundle_uri         String,
    bundle_sha256      String,
    bundle_size_bytes  Int64,
    received_at        DateTime64(3, 'UTC'),
    robot_model_id     Nullable(String),
    task_id            Nullable(String),
    schema_version     UInt8,
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY submission_id;

CREATE TABLE IF NOT EXISTS kibotos.gate_results
(
    submission_id    String,
    miner_id         String,
    gate             LowCardinality(String),
    gate_order       UInt8,
    passed           Bool,
    reason_code      Nullable(String),
    metrics_json     String,
    thresholds_json  String,
    flags            Array(String),
    wall_ms          Nullable(Float64),
    config_version   Nullable(String),
    decided_at       DateTime64(3, 'UTC'),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (submission_id, gate);

CREATE TABLE IF NOT EXISTS kibotos.verification_reports
(
    submission_id        String,
    miner_id             String,
    verdict              LowCardinality(String),
    reason_code          Nullable(String),
    failed_gate          Nullable(String),
    config_version       Nullable(String),
    robot_model_id       Nullable(String),
    robot_model_revision Nullable(String),
    points               Float64,
    bundle_uri           String,
    claimed_offset_ms    Nullable(Float64),
    estimated_offset_ms  Nullable(Float64),
    sync_confidence      Nullable(Float64),
    report_json          String,
    decided_at           DateTime64(3, 'UTC'),
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY submission_id;

CREATE TABLE IF NOT EXISTS kibotos.points_ledger
(
    entry_id        String,
    miner_id        String,
    submission_id   String,
    kind            LowCardinality(String),
    points          Float64,
    config_version  Nullable(String),
    created_at      DateTime64(3, 'UTC'),
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY entry_id;

-- One row per (record, processor) that could not be handled; payload and key verbatim.
CREATE TABLE IF NOT EXISTS kibotos.dead_letters
(
    source_topic      String,
    source_partition  Int32,
    source_offset     Int64,
    processor_id      LowCardinality(String),
    key               Nullable(String),
    payload           String,
    error_code        LowCardinality(String),
    error_message     String,
    failed_at         DateTime64(3, 'UTC'),
    inserted_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_topic, source_partition, source_offset, processor_id);
