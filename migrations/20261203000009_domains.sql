-- Organization domains (Clerk's `organizationDomain.*` events and the Backend API's
-- `/organization_domains`). A domain's delete names only the domain: its tombstone keeps the
-- organization the mirror held (and learns it from a create that arrives after the delete).

ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission', 'domain'));

CREATE TABLE domains (
    id                        text PRIMARY KEY,
    organization_id           text,
    -- The domain name in lower case (Clerk's `name`, as sent, stays in `data`).
    domain                    text,
    enrollment_mode           text,
    -- `affiliation_verification.status`, else the deprecated `verification.status`.
    verification_status       text,
    affiliation_email_address text,
    created_at                timestamptz,
    updated_at                timestamptz,
    deleted_at                timestamptz,
    data                      jsonb,
    version_updated_ms        bigint,
    version_event_ms          bigint,
    version_key               text,
    update_cursor             bigint NOT NULL
);
CREATE INDEX domains_organization ON domains (organization_id, id);
CREATE INDEX domains_domain ON domains (domain);

DO $$
BEGIN
    ALTER TABLE domains ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL: large values stay compressed with pglz';
END
$$;
