-- Projections (users, organizations, memberships), the change log and its head.
-- Written only by the applier (one per database, under an advisory lock). No foreign keys across
-- projections: events arrive in any order.

-- The log's identity and head. `log_id` is random, made here once, and goes inside cursors so a
-- cursor from another database is recognised. `head_seq` is the last assigned seq: it is taken
-- from this row inside the applier's batch transaction, so seq is gap-free (a SEQUENCE would
-- leave gaps on rollback) and commit order is seq order.
CREATE TABLE log_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    log_id     text    NOT NULL,
    head_seq   bigint  NOT NULL DEFAULT 0,
    -- The oldest seq still retained (pruning moves it; see the retention work).
    oldest_seq bigint  NOT NULL DEFAULT 1
);
INSERT INTO log_head (log_id) VALUES (replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE changes (
    seq             bigint      PRIMARY KEY,
    entity_type     text        NOT NULL CHECK (entity_type IN ('user', 'organization', 'membership')),
    entity_id       text        NOT NULL,
    operation       text        NOT NULL CHECK (operation IN ('created', 'updated', 'deleted')),
    -- The organization and user the change concerns (for watch filters).
    organization_id text,
    user_id         text,
    -- The entity's new state, and its previous state when there was one.
    state           jsonb       NOT NULL,
    previous        jsonb,
    -- What caused it: `webhook:<svix-id>`, `backfill:…`, `reconcile:…`, `replay:…`.
    source          text        NOT NULL,
    inbox_id        bigint,
    commit_time     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_entity ON changes (entity_type, entity_id, seq);
CREATE INDEX changes_organization ON changes (organization_id, seq) WHERE organization_id IS NOT NULL;
CREATE INDEX changes_user ON changes (user_id, seq) WHERE user_id IS NOT NULL;

-- Every projection row carries the version that won last-writer-wins (Clerk's `updated_at`, then
-- the envelope timestamp, then the event key), `deleted_at` for tombstones, and `update_cursor`:
-- the seq of the change that last touched it.
CREATE TABLE users (
    id                    text PRIMARY KEY,
    external_id           text,
    username              text,
    first_name            text,
    last_name             text,
    image_url             text,
    primary_email_address text,
    banned                boolean NOT NULL DEFAULT false,
    locked                boolean NOT NULL DEFAULT false,
    created_at            timestamptz,
    updated_at            timestamptz,
    last_sign_in_at       timestamptz,
    deleted_at            timestamptz,
    -- The full Clerk object (\u0000 stripped); NULL for tombstones.
    data                  jsonb,
    version_updated_ms    bigint,
    version_event_ms      bigint,
    version_key           text,
    update_cursor         bigint NOT NULL
);
CREATE INDEX users_external_id ON users (external_id) WHERE external_id IS NOT NULL;
CREATE INDEX users_username ON users (lower(username)) WHERE username IS NOT NULL;

-- Lookup by any address of a user, case-insensitively; tombstones have none.
CREATE TABLE user_email_addresses (
    user_id       text NOT NULL,
    email_id      text NOT NULL,
    email_address text NOT NULL,
    PRIMARY KEY (user_id, email_id)
);
CREATE INDEX user_email_addresses_lower ON user_email_addresses (lower(email_address));

CREATE TABLE user_phone_numbers (
    user_id      text NOT NULL,
    phone_id     text NOT NULL,
    phone_number text NOT NULL,
    PRIMARY KEY (user_id, phone_id)
);
CREATE INDEX user_phone_numbers_number ON user_phone_numbers (phone_number);

CREATE TABLE organizations (
    id                 text PRIMARY KEY,
    name               text,
    slug               text,
    image_url          text,
    members_count      integer,
    created_at         timestamptz,
    updated_at         timestamptz,
    deleted_at         timestamptz,
    data               jsonb,
    version_updated_ms bigint,
    version_event_ms   bigint,
    version_key        text,
    update_cursor      bigint NOT NULL
);
CREATE INDEX organizations_slug ON organizations (slug) WHERE slug IS NOT NULL;

CREATE TABLE memberships (
    id                 text PRIMARY KEY,
    organization_id    text NOT NULL,
    user_id            text NOT NULL,
    role               text,
    role_name          text,
    permissions        text[] NOT NULL DEFAULT '{}',
    created_at         timestamptz,
    updated_at         timestamptz,
    deleted_at         timestamptz,
    -- The full Clerk membership, with the organization and public user data it carried.
    data               jsonb,
    version_updated_ms bigint,
    version_event_ms   bigint,
    version_key        text,
    update_cursor      bigint NOT NULL
);
CREATE INDEX memberships_organization ON memberships (organization_id, id);
CREATE INDEX memberships_user ON memberships (user_id, id);
