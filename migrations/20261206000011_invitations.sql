-- Organization invitations (Clerk's `organizationInvitation.*` events and the Backend API's
-- instance-wide `/organization_invitations`, every status). The acceptance `url` carries a token:
-- it is removed before anything is stored (inbox bodies included), so no column or `data` holds it.
--
-- `clerk_status` is Clerk's word; `status` is what the mirror shows: Clerk's, or `expired` when
-- the mirror itself expired a pending invitation whose `expires_at` passed (Clerk sends no event
-- for that). The expiry is an inbox row of source `clock` produced by the applier-lock holder.

ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain', 'invitation'));

CREATE TABLE invitations (
    id                 text PRIMARY KEY,
    organization_id    text,
    -- As Clerk sent it; filters compare it with ASCII letters folded.
    email_address      text,
    role               text,
    role_name          text,
    status             text,
    clerk_status       text,
    -- The user who accepted it (`organizationInvitation.accepted` carries `user_id`).
    user_id            text,
    expires_at         timestamptz,
    created_at         timestamptz,
    updated_at         timestamptz,
    deleted_at         timestamptz,
    data               jsonb,
    version_updated_ms bigint,
    version_event_ms   bigint,
    version_key        text,
    update_cursor      bigint NOT NULL
);
CREATE INDEX invitations_organization ON invitations (organization_id, id);
CREATE INDEX invitations_email ON invitations (lower(coalesce(email_address, '') COLLATE "C"));
-- What the expiry producer looks for: pending invitations by when they expire.
CREATE INDEX invitations_expiring ON invitations (expires_at)
    WHERE status = 'pending' AND deleted_at IS NULL AND expires_at IS NOT NULL;

DO $$
BEGIN
    ALTER TABLE invitations ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL: large values stay compressed with pglz';
END
$$;
