-- Ingest guarantees (issue 12, item 6), written by the ingest API and the sink.
--
-- ingest_requests: every signed upload request the API honoured, keyed by the SHA-256
-- of the signed message. A signed request is single-use: the same request sent again
-- (a captured request replayed before it expires) finds its row and is refused with
-- request_replayed, without a second ticket or rate-limit token. Written by the ingest
-- API before it answers, so the rule survives a restart. Rows matter only while the
-- request is fresh (ingest_request_max_skew_s); the TTL keeps the table small.
CREATE TABLE IF NOT EXISTS kibotos.ingest_requests
(
    request_id       String,
    miner_id         String,
    submission_id    String,
    upload_id        String,
    requested_at     DateTime64(3, 'UTC'),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY request_id
TTL toDateTime(inserted_at) + INTERVAL 7 DAY;

-- upload_verdicts: a rejection by the ingest checks judges one upload attempt, not the
-- submission: anyone can upload bytes under any submission_id, so an attacker's
-- rejected attempt must never become (or pre-empt) the verdict of the submission its
-- owner uploads. The sink writes verdicts of the ingest_integrity gate here, one row
-- per (submission_id, upload_id), and never into verification_reports/gate_results.
CREATE TABLE IF NOT EXISTS kibotos.upload_verdicts
(
    submission_id    String,
    upload_id        String,
    miner_id         String,
    verdict          LowCardinality(String),
    reason_code      Nullable(String),
    failed_gate      Nullable(String),
    config_version   Nullable(String),
    bundle_uri       String,
    report_json      String,
    decided_at       DateTime64(3, 'UTC'),
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(decided_at)
ORDER BY (submission_id, upload_id);

-- the upload status endpoint finds a receipt by upload_id alone
ALTER TABLE kibotos.ingest_receipts ADD INDEX IF NOT EXISTS upload_id_idx upload_id TYPE bloom_filter GRANULARITY 1;
