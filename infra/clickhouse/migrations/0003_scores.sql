-- Scores and rewards (design §7): the final quality score S, its soft components and the
-- reward of every decided submission, flattened for dashboards (the full breakdown with
-- each component's inputs stays in report_json); ledger entries record the score,
-- components and weights they were paid under. Columns are appended, so rows written
-- before this migration read as NULL (no score was computed for them).

ALTER TABLE kibotos.verification_reports
    ADD COLUMN IF NOT EXISTS score Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_pose Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_retarget Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_align Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_task Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_object Nullable(Float64),
    ADD COLUMN IF NOT EXISTS s_novel Nullable(Float64),
    ADD COLUMN IF NOT EXISTS reward Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS scoring_config_version Nullable(String);

ALTER TABLE kibotos.points_ledger
    ADD COLUMN IF NOT EXISTS score Nullable(Float64),
    ADD COLUMN IF NOT EXISTS components_json Nullable(String),
    ADD COLUMN IF NOT EXISTS weights_json Nullable(String);
