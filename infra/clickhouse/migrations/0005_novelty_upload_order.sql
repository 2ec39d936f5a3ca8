-- Novelty: the upload time of each indexed submission. The index is still compared in
-- the order of first checks (created_at), so two racing copies never both pass as new;
-- received_at decides who is the original between two miners: an earlier upload is never
-- penalized for a later one by another miner that happened to be checked first (the later
-- one is reported as `cross_miner_later_copy` instead). Rows indexed before this
-- migration read their check time.

ALTER TABLE kibotos.novelty_index
    ADD COLUMN IF NOT EXISTS received_at DateTime64(3, 'UTC') DEFAULT created_at AFTER created_at;
