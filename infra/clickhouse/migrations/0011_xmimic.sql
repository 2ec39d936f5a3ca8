-- XMimic, policies trained from XGen clips: training runs (one row per run, replaced as
-- it progresses), the progress of every iteration, the policies a finished run produced
-- and their evaluations. Written by the ClickHouse sink from training.requests and
-- training.progress (runs, progress, policies) and by the evaluation path (policy_evals).
-- Replacing tables keyed by deterministic ids: a redelivered job rewrites the same rows.

CREATE TABLE IF NOT EXISTS kibotos.training_runs
(
    run_id              String,
    role                LowCardinality(String),
    task                String,
    dataset             String,
    dataset_versions    Array(String),
    teacher_policy_id   Nullable(String),
    config_version      String,
    backend             LowCardinality(String),
    device              LowCardinality(String),
    num_envs            Int32,
    state               LowCardinality(String),
    iteration           Int32,
    iterations          Int32,
    env_steps           Int64,
    success_rate        Nullable(Float64),
    reward_terms_json   String,
    losses_json         String,
    checkpoint_uri      Nullable(String),
    policy_id           Nullable(String),
    reason_code         Nullable(String),
    requested_by        String,
    updated_at          DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY run_id;

-- One row per (run, iteration); a resumed run rewrites the iterations it repeats.
CREATE TABLE IF NOT EXISTS kibotos.training_progress
(
    run_id              String,
    iteration           Int32,
    iterations          Int32,
    state               LowCardinality(String),
    env_steps           Int64,
    success_rate        Nullable(Float64),
    reward_terms_json   String,
    losses_json         String,
    at                  DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (run_id, iteration);

CREATE TABLE IF NOT EXISTS kibotos.policies
(
    policy_id           String,
    run_id              String,
    role                LowCardinality(String),
    task                String,
    dataset_versions    Array(String),
    checkpoint_uri      String,
    config_version      String,
    iterations          Int32,
    env_steps           Int64,
    created_at          DateTime64(3, 'UTC'),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY policy_id;

-- split: train | heldout. baseline_success_rate: the reference motion replayed open-loop
-- on the same clip, what a policy has to beat.
CREATE TABLE IF NOT EXISTS kibotos.policy_evals
(
    eval_id                 String,
    policy_id               String,
    dataset                 String,
    split                   LowCardinality(String),
    clip_id                 String,
    episodes                Int32,
    successes               Int32,
    success_rate            Float64,
    baseline_success_rate   Float64,
    tracking_error_m        Float64,
    final_height_error_m    Float64,
    config_version          String,
    created_at              DateTime64(3, 'UTC'),
    inserted_at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (policy_id, eval_id, split, clip_id);
