-- Datasets (kibotos.datasets): published versions, the episodes each version added or
-- removed, and attribution entries (what each miner earned from a publication or from a
-- policy that passed evaluation). Written by the ClickHouse sink from the topics
-- datasets.versions / datasets.episodes / datasets.attributions; the versions themselves
-- (episodes.jsonl, cards, exports) are immutable files, these tables index them.

CREATE TABLE IF NOT EXISTS kibotos.datasets
(
    dataset             String,
    spec_json           String,
    spec_hash           String,
    latest_version      Int32,
    episodes            Int64,
    content_hash        String,
    updated_at          DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(latest_version)
ORDER BY dataset;

CREATE TABLE IF NOT EXISTS kibotos.dataset_versions
(
    dataset             String,
    version             Int32,
    content_hash        String,
    parent_hash         Nullable(String),
    episodes            Int64,
    added               Int64,
    removed             Int64,
    spec_hash           String,
    rule_version        String,
    attribution_points  Float64,
    card_json           String,
    created_at          DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (dataset, version);

-- one row per (dataset, episode): its latest change (added, or removed by a later version)
CREATE TABLE IF NOT EXISTS kibotos.dataset_episodes
(
    dataset              String,
    submission_id        String,
    miner_id             String,
    source               LowCardinality(String),
    robot_model_id       Nullable(String),
    task_id              Nullable(String),
    score                Nullable(Float64),
    reward               Float64,
    attribution_points   Float64,
    components_json      String,
    soft_flags           Array(String),
    evidence_uris        Array(String),
    bundle_uri           String,
    decided_at           DateTime64(3, 'UTC'),
    added_in_version     Int32,
    removed_in_version   Int32,
    changed_in_version   Int32,
    inserted_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(changed_in_version)
ORDER BY (dataset, submission_id);

CREATE TABLE IF NOT EXISTS kibotos.attributions
(
    entry_id       String,
    dataset        Nullable(String),
    version        Int32,
    policy_id      Nullable(String),
    miner_id       String,
    kind           LowCardinality(String),
    episodes       Int64,
    score_sum      Float64,
    share          Float64,
    points         Float64,
    rule_version   String,
    created_at     DateTime64(3, 'UTC'),
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY entry_id;
