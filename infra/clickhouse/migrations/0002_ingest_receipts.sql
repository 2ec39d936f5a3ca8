-- Ingestion receipts: one row per completed upload (accepted for verification, or
-- rejected by a pre-verification check), written by the ingest API itself — not by the
-- sink — because replay detection must see an accepted bundle before the next upload
-- is judged. Holds the bundle hash tree (node hashes), the manifest hash, the signature
-- and the submission metadata (design §4 "On receipt, the system stores ...").
--
-- Replays: a bundle whose merkle_root (or submission_id) was already accepted is refused.
-- Versioned by inserted_at: a retried completion of the same upload replaces its row.

CREATE TABLE IF NOT EXISTS kibotos.ingest_receipts
(
    submission_id      String,
    upload_id          String,
    miner_id           String,
    status             LowCardinality(String),
    reason_code        Nullable(String),
    merkle_root        String,
    manifest_sha256    String,
    bundle_sha256      String,
    bundle_size_bytes  Int64,
    bundle_uri         String,
    signature          String,
    nodes_json         String,
    manifest_json      String,
    details_json       String,
    received_at        DateTime64(3, 'UTC'),
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX merkle_root_idx merkle_root TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY (submission_id, upload_id);
