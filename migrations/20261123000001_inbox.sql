-- The inbox: every verified event, stored before it is acknowledged.
--
-- Rows are keyed by (source, event_key): for webhooks the source is 'webhook' and the key is the
-- delivery's `svix-id` (Clerk's bodies carry no event id), so a redelivery is stored once.
-- Backfill, reconcile and replay enqueue rows with sources of their own.
CREATE TABLE inbox (
    -- Arrival order: the applier takes pending rows in this order.
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text        NOT NULL,
    event_key    text        NOT NULL,
    -- The envelope's `type`, or NULL when the verified body carries none (stored all the same).
    event_type   text,
    -- The envelope's `timestamp` (ms since the epoch; read as seconds below 10^12).
    event_time   timestamptz,
    instance_id  text,
    -- The raw request body as received, byte for byte (not jsonb: a \u0000 in a string must not
    -- make an event unstorable). NULL for email.* and sms.* events, whose bodies carry one-time
    -- codes and sign-in links.
    body         bytea,
    body_redacted boolean    NOT NULL DEFAULT false,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- pending → applied | skipped (not a type the mirror applies) | failed (dead letter, see error)
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'applied', 'skipped', 'failed')),
    processed_at timestamptz,
    error        text,
    attempts     integer     NOT NULL DEFAULT 0,
    CONSTRAINT inbox_source_key UNIQUE (source, event_key),
    CONSTRAINT inbox_body_or_redacted CHECK (body IS NOT NULL OR body_redacted)
);

CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';
CREATE INDEX inbox_failed ON inbox (id) WHERE status = 'failed';
