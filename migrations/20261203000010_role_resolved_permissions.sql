-- A role's resolved permission keys, stored: the applier recomputes them whenever the role or
-- one of its permissions is written (`Kind::after_write` of roles and permissions), so the
-- read views join a column instead of calling `clerk_mirror_role_permissions` per membership
-- row (which the planner cannot inline; it made PostgreSQL-route membership reads several times
-- slower).

ALTER TABLE roles ADD COLUMN resolved_permissions text[] NOT NULL DEFAULT '{}';
UPDATE roles SET resolved_permissions = clerk_mirror_role_permissions(permission_ids, permission_keys);

DROP VIEW membership_view;
DROP VIEW role_view;

CREATE VIEW role_view AS
    SELECT r.*, r.resolved_permissions AS permissions FROM roles r;

CREATE VIEW membership_view AS
    SELECT m.id, m.organization_id, m.user_id, m.role,
           CASE WHEN r.deleted_at IS NULL THEN coalesce(r.name, m.role_name) ELSE m.role_name END AS role_name,
           CASE WHEN m.deleted_at IS NOT NULL THEN m.permissions
                WHEN r.id IS NULL THEN m.permissions
                WHEN r.deleted_at IS NULL THEN r.resolved_permissions
                ELSE '{}'::text[] END AS permissions,
           m.created_at, m.updated_at, m.deleted_at, m.data,
           m.version_updated_ms, m.version_event_ms, m.version_key, m.update_cursor,
           CASE WHEN m.deleted_at IS NOT NULL THEN NULL
                WHEN r.id IS NULL THEN 'membership_snapshot'
                WHEN r.deleted_at IS NULL THEN 'role'
                ELSE 'deleted_role' END AS permissions_source
      FROM memberships m
      LEFT JOIN LATERAL (
          SELECT r.id, r.name, r.deleted_at, r.resolved_permissions FROM roles r
           WHERE m.deleted_at IS NULL AND m.role IS NOT NULL
             AND (r.key = m.role OR r.key = clerk_mirror_role_alias(m.role))
           ORDER BY r.deleted_at IS NOT NULL, r.key <> m.role, r.id COLLATE "C"
           LIMIT 1) r ON true;
