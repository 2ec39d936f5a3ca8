-- Novelty: the novelty stage's input record, kept with each indexed submission (base64 of
-- the Avro value). When an original is checked after another miner's copy of it that raced
-- ahead (and may have been paid), the stage revises the copy's stored result and sends this
-- record on with it, so the decision can publish a `revised` verdict and a compensating
-- ledger entry. Rows indexed before this migration have none and are never revised.

ALTER TABLE kibotos.novelty_index
    ADD COLUMN IF NOT EXISTS event_payload String DEFAULT '';
