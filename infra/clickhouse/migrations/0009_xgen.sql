-- XGen, the data factory: requests (a human demonstration to turn into G1 clips), the
-- result of every stage (one row per stage and clip), and the exported clips with their
-- quality judgement. Written by the ClickHouse sink from xgen.requests, xgen.progress,
-- xgen.rejected and xgen.clips. Replacing tables keyed by deterministic ids: a redelivered
-- job rewrites the same rows.

CREATE TABLE IF NOT EXISTS kibotos.xgen_requests
(
    request_id         String,
    uploader           String,
    task_id            String,
    task_version       String,
    source_kind        LowCardinality(String),
    source_uri         String,
    source_sha256      String,
    source_size_bytes  Int64,
    annotation_json    Nullable(String),
    upload_id          Nullable(String),
    requested_at       DateTime64(3, 'UTC'),
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY request_id;

-- clip_index -1: the stage ran on the whole request (pose, retarget, interaction,
-- augment); export runs once per clip. clip_count: clips expected, once augment has run.
CREATE TABLE IF NOT EXISTS kibotos.xgen_stage_results
(
    request_id    String,
    uploader      String,
    stage         LowCardinality(String),
    clip_index    Int32,
    passed        Bool,
    reason_code   Nullable(String),
    metrics_json  String,
    artifact_uri  Nullable(String),
    wall_ms       Float64,
    clip_count    Nullable(Int32),
    at            DateTime64(3, 'UTC'),
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (request_id, stage, clip_index);

CREATE TABLE IF NOT EXISTS kibotos.xgen_clips
(
    clip_id              String,
    request_id           String,
    uploader             String,
    source_sha256        String,
    task_id              String,
    task_version         String,
    clip_index           Int32,
    variant_kind         LowCardinality(String),
    variant_json         String,
    clip_uri             String,
    metadata_uri         String,
    preview_uri          Nullable(String),
    frames               Int32,
    fps                  Float64,
    quality_score        Nullable(Float64),
    quality_verdict      LowCardinality(String),
    quality_reason_code  Nullable(String),
    quality_json         String,
    verified             Bool,
    config_version       String,
    created_at           DateTime64(3, 'UTC'),
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (request_id, clip_id);
