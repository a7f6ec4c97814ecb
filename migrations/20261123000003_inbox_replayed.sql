-- A dead letter that was replayed (re-enqueued as a new `replay` row) is marked `replayed`, so it
-- leaves the dead-letter list and is pruned like an applied row.
ALTER TABLE inbox DROP CONSTRAINT inbox_status_check;
ALTER TABLE inbox ADD CONSTRAINT inbox_status_check
    CHECK (status IN ('pending', 'applied', 'skipped', 'failed', 'replayed'));
CREATE INDEX inbox_received ON inbox (received_at DESC);
CREATE INDEX inbox_processed ON inbox (processed_at DESC) WHERE processed_at IS NOT NULL;
