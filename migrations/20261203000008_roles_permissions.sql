-- Roles and permissions (Clerk's `role.*` and `permission.*` events, and the Backend API's
-- `/organization_roles` and `/organization_permissions`), and the effective permissions of a
-- membership: its role's *current* permissions, resolved at read time.
--
-- A role keeps its permissions by permission id (`permission_ids`), with the key each had when
-- the role was last written (`permission_keys`, same order): a key is resolved through the
-- permissions projection (a renamed permission shows its new key, a deleted one is dropped) and
-- the carried key answers only for a permission the mirror has never seen.

ALTER TABLE changes DROP CONSTRAINT changes_entity_type_check;
ALTER TABLE changes ADD CONSTRAINT changes_entity_type_check
    CHECK (entity_type IN ('user', 'organization', 'membership', 'role', 'permission'));

CREATE TABLE roles (
    id                  text PRIMARY KEY,
    -- The role's key (`org:admin`); a tombstone keeps it, so members still holding a deleted
    -- role are denied rather than answered from their snapshot.
    key                 text,
    name                text,
    description         text,
    is_creator_eligible boolean NOT NULL DEFAULT false,
    permission_ids      text[] NOT NULL DEFAULT '{}',
    permission_keys     text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz,
    updated_at          timestamptz,
    deleted_at          timestamptz,
    data                jsonb,
    version_updated_ms  bigint,
    version_event_ms    bigint,
    version_key         text,
    update_cursor       bigint NOT NULL
);
CREATE INDEX roles_key ON roles (key);

CREATE TABLE permissions (
    id                 text PRIMARY KEY,
    key                text,
    name               text,
    description        text,
    -- Clerk's string as sent (`system`, `custom`, `user`, …).
    type               text,
    created_at         timestamptz,
    updated_at         timestamptz,
    deleted_at         timestamptz,
    data               jsonb,
    version_updated_ms bigint,
    version_event_ms   bigint,
    version_key        text,
    update_cursor      bigint NOT NULL
);
CREATE INDEX permissions_key ON permissions (key);

-- A role's permission keys now: a live permission's current key, a deleted one dropped, one
-- never seen by its carried key; distinct, in byte order (as the read cache answers).
CREATE FUNCTION clerk_mirror_role_permissions(ids text[], keys text[]) RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(DISTINCT x.k ORDER BY x.k), '{}') FROM (
        SELECT (CASE WHEN p.id IS NULL THEN u.key WHEN p.deleted_at IS NULL THEN p.key END) COLLATE "C" AS k
          FROM unnest(ids, keys) AS u(id, key) LEFT JOIN permissions p ON p.id = u.id
    ) x WHERE x.k IS NOT NULL AND x.k <> ''
$$;

-- The other spelling of a default role's key: instances made before `org:` prefixes name them
-- `admin` and `basic_member`.
CREATE FUNCTION clerk_mirror_role_alias(key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE key WHEN 'admin' THEN 'org:admin' WHEN 'org:admin' THEN 'admin'
                    WHEN 'basic_member' THEN 'org:member' WHEN 'org:member' THEN 'basic_member' END
$$;

-- Roles as the API reads them: with `permissions`, the resolved keys.
CREATE VIEW role_view AS
    SELECT r.*, clerk_mirror_role_permissions(r.permission_ids, r.permission_keys) AS permissions
      FROM roles r;

-- Memberships as the API reads them. A live membership's role is the role with its key: a live
-- one, else a live one with the key's other spelling, else a deleted one (either spelling); the
-- least id among equals. With a live role, `permissions` and `role_name` are the role's now
-- (`permissions_source` 'role'); with only a deleted one, no permissions ('deleted_role'); with
-- none known, the membership's own snapshot ('membership_snapshot'). A tombstone has none.
CREATE VIEW membership_view AS
    SELECT m.id, m.organization_id, m.user_id, m.role,
           CASE WHEN r.deleted_at IS NULL THEN coalesce(r.name, m.role_name) ELSE m.role_name END AS role_name,
           CASE WHEN m.deleted_at IS NOT NULL THEN m.permissions
                WHEN r.id IS NULL THEN m.permissions
                WHEN r.deleted_at IS NULL THEN clerk_mirror_role_permissions(r.permission_ids, r.permission_keys)
                ELSE '{}'::text[] END AS permissions,
           m.created_at, m.updated_at, m.deleted_at, m.data,
           m.version_updated_ms, m.version_event_ms, m.version_key, m.update_cursor,
           CASE WHEN m.deleted_at IS NOT NULL THEN NULL
                WHEN r.id IS NULL THEN 'membership_snapshot'
                WHEN r.deleted_at IS NULL THEN 'role'
                ELSE 'deleted_role' END AS permissions_source
      FROM memberships m
      LEFT JOIN LATERAL (
          SELECT * FROM roles r
           WHERE m.deleted_at IS NULL AND m.role IS NOT NULL
             AND (r.key = m.role OR r.key = clerk_mirror_role_alias(m.role))
           ORDER BY r.deleted_at IS NOT NULL, r.key <> m.role, r.id COLLATE "C"
           LIMIT 1) r ON true;

DO $$
BEGIN
    ALTER TABLE roles ALTER COLUMN data SET COMPRESSION lz4;
    ALTER TABLE permissions ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL: large values stay compressed with pglz';
END
$$;
