-- Backfill progress, so an interrupted run resumes where it stopped: one row per resource of the
-- run in progress (`users`, `organizations`, `organization_memberships`).
CREATE TABLE backfill_checkpoints (
    resource   text PRIMARY KEY,
    "offset"   bigint      NOT NULL DEFAULT 0,
    fetched    bigint      NOT NULL DEFAULT 0,
    done       boolean     NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
