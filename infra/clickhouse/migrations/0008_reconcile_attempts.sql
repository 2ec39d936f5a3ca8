-- Reconciler: how often each stuck submission was emitted again, kept in the warehouse so
-- that a reconciler started afresh (a restarted `kibotos up`, another operator's
-- `kibotos admin reconcile`) counts on from where the last one stopped instead of
-- re-driving a submission forever. One row per change; the latest `revision` of a
-- submission is its state: `emitted` (re-emitted `attempts` times, the last at
-- `last_emitted_at`), `given_up` (over the attempt limit: dead-lettered with `reason`,
-- an operator's case) or `reset` (an operator asked for another round).

CREATE TABLE IF NOT EXISTS kibotos.reconcile_attempts
(
    submission_id    String,
    revision         UInt64,
    attempts         UInt32,
    last_emitted_at  DateTime64(3, 'UTC'),
    state            LowCardinality(String),
    reason           String DEFAULT '',
    updated_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY submission_id;
