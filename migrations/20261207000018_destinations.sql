-- Outbound webhooks (#26): destinations, their delivery attempts, the sender's epoch, and raw
-- Clerk events recorded in the change log for the destinations that select them.

-- A raw event (a type the mirror does not project, selected by some destination) takes its place
-- in the change log in arrival order: entity_type `event`, operation `received`, the body as
-- received in `raw` (bytes: a \u0000 must not make it unstorable), `state` naming its type and
-- key. Watches and the read cache never see these rows.
ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation',
                           'subscription_item', 'subscription', 'plan', 'payment_attempt', 'event'));
ALTER TABLE changes DROP CONSTRAINT changes_operation_check;
ALTER TABLE changes ADD CONSTRAINT changes_operation_check
    CHECK (operation IN ('created', 'updated', 'deleted', 'received'));
ALTER TABLE changes ADD COLUMN raw bytea;

CREATE TABLE destinations (
    -- `dst_` + 24 random hex digits; the API's name is `destinations/<id>`.
    id               text        PRIMARY KEY,
    url              text        NOT NULL,
    -- What is sent: changes of these entity types (empty: none unless no event types either,
    -- then all), matching `filter` (the lists' language), and raw Clerk events of these types.
    entity_types     text[]      NOT NULL DEFAULT '{}',
    filter           text        NOT NULL DEFAULT '',
    event_types      text[]      NOT NULL DEFAULT '{}',
    -- The entity fields sent (proto names); empty: all but `private_metadata`.
    fields           text[]      NOT NULL DEFAULT '{}',
    -- Deliveries in flight: changes are partitioned by entity into this many ordered lanes.
    lanes            integer     NOT NULL DEFAULT 1 CHECK (lanes BETWEEN 1 AND 64),
    -- Most changes of one lane sent in one delivery (`clerkmirror.batch`).
    batch_size       integer     NOT NULL DEFAULT 1 CHECK (batch_size BETWEEN 1 AND 100),
    -- The signing secret, sealed (AES-256-GCM under the key given to `serve`; the id is the
    -- associated data), and the previous one while a rotation's transition lasts.
    secret           text        NOT NULL,
    previous_secret  text,
    previous_until   timestamptz,
    state            text        NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    paused_reason    text,
    -- Per lane: every selected change of the lane up to this seq is delivered (or was not
    -- selected). The destination's cursor is the least of them.
    lane_cursors     bigint[]    NOT NULL,
    -- Bumped by every change of the row's settings: the sender restarts the destination's lanes.
    generation       bigint      NOT NULL DEFAULT 1,
    last_status      integer,
    last_error       text,
    last_attempt_at  timestamptz,
    next_attempt_at  timestamptz,
    failing_since    timestamptz,
    delivered        bigint      NOT NULL DEFAULT 0,
    failed_attempts  bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(lane_cursors) = lanes)
);

-- Recent attempts (the newest few hundred per destination are kept).
CREATE TABLE delivery_attempts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination_id text        NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    seq            bigint      NOT NULL,
    webhook_id     text        NOT NULL,
    attempt_time   timestamptz NOT NULL DEFAULT now(),
    duration_ms    integer     NOT NULL,
    delivered      boolean     NOT NULL,
    http_status    integer,
    error          text
);
CREATE INDEX delivery_attempts_destination ON delivery_attempts (destination_id, id);

-- The sender's fence: the replica holding the applier lock bumps `epoch` before its first send
-- (after waiting out the delivery timeout); a cursor moves only under the epoch that read it.
CREATE TABLE outbound_sender (
    singleton boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch     bigint      NOT NULL DEFAULT 0,
    holder    text,
    since     timestamptz
);
INSERT INTO outbound_sender DEFAULT VALUES;
