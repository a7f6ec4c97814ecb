-- The drift reports of reconcile runs (the newest is the one shown; older ones are pruned).
CREATE TABLE reconcile_reports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    report      jsonb       NOT NULL
);
