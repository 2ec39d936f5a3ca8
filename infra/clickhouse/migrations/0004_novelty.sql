-- Novelty index (design §8): one fingerprint per submission, compared against the
-- submitter's recent window and the global window by kibotos/novelty/index.py.
--
-- Keyed by submission_id (ReplacingMergeTree): a redelivered check re-inserts the same
-- row. `revision` is the version column: 0 = fingerprint recorded, 1 = the assessment
-- (result_json, judged under result_config_version) stored with it, so that a redelivered
-- check returns the stored answer. created_at is when the submission was first checked;
-- a submission is only ever compared with rows that were checked before it.
--
-- Video samples are taken at sample_fps: frame_hashes / mirror_hashes hold the 64-bit
-- pHash of each sample (and of its mirror image); motion[v] is the motion signature in
-- variant motion_variants[v] (identity, mirror, centre crops), time-major, motion_len
-- samples x motion_channels Int8 values. traj_fingerprint is joint-major, traj_joints x
-- traj_len, at traj_rate_hz. Any of them is empty when there is nothing to compare.
-- embedding is the L2-normalised clip embedding of embedding_model.

CREATE TABLE IF NOT EXISTS kibotos.novelty_index
(
    submission_id          String,
    miner_id               String,
    robot_model_id         String,
    created_at             DateTime64(3, 'UTC'),
    sample_fps             Float32,
    frame_hashes           Array(UInt64),
    mirror_hashes          Array(UInt64),
    motion_variants        Array(LowCardinality(String)),
    motion_channels        UInt16,
    motion_len             UInt32,
    motion                 Array(Array(Int8)),
    embedding_model        LowCardinality(String),
    embedding              Array(Float32),
    traj_rate_hz           Float32,
    traj_joints            UInt16,
    traj_len               UInt32,
    traj_fingerprint       Array(Float32),
    artifacts_json         String,
    fingerprint_json       String,
    revision               UInt8,
    result_json            String DEFAULT '',
    result_config_version  String DEFAULT '',
    inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_created_at created_at TYPE minmax GRANULARITY 1,
    INDEX idx_miner miner_id TYPE bloom_filter GRANULARITY 1
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY submission_id;
