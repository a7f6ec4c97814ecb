//! Who may do what, from the roles and permissions projections: a membership's effective
//! permissions (its role's *current* permissions when the role is known, none when the role was
//! deleted while held, the membership's own snapshot when the role is unknown) and the verdict
//! of a permission check. [`Access`] is the in-memory twin of the migration's `role_view` and
//! `membership_view` (the read cache holds one; a test holds them to the same answers), and
//! [`check`] decides a check from a [`Standing`] however it was read.

use std::collections::HashMap;

use crate::pb;

use super::convert;
use super::kind::Kind;
use super::roles::{self, PermissionRecord, RoleRecord};
use super::{MembershipRecord, OrganizationRecord, UserRecord};

/// How a kind is shown *now*: with what is derived at read time (a role's permission keys, a
/// membership's effective permissions) resolved against the roles and permissions held. A kind
/// with nothing derived is shown as [`Kind::message`] says, the default: `impl Resolved for X {}`
/// is all a new kind needs here.
pub trait Resolved: Kind {
    /// Whether [`Resolved::message_now`] differs from [`Kind::message`].
    const RESOLVED_AT_READ: bool = false;
    fn message_now(&self, access: &Access, update_cursor: i64, log_id: &str) -> Self::Message {
        let _ = access;
        self.message(update_cursor, log_id)
    }
}

impl Resolved for UserRecord {}
impl Resolved for OrganizationRecord {}
impl Resolved for PermissionRecord {}
impl Resolved for super::DomainRecord {}
impl Resolved for super::InvitationRecord {}
impl Resolved for super::SubscriptionItemRecord {}
impl Resolved for super::SubscriptionRecord {}
impl Resolved for super::PlanRecord {}
impl Resolved for super::PaymentAttemptRecord {}
#[cfg(test)]
impl Resolved for super::test_kind::WidgetRecord {}

impl Resolved for MembershipRecord {
    const RESOLVED_AT_READ: bool = true;
    fn message_now(&self, access: &Access, update_cursor: i64, log_id: &str) -> pb::Membership {
        access.effective_membership(&convert::membership(self, update_cursor, log_id))
    }
}

impl Resolved for RoleRecord {
    const RESOLVED_AT_READ: bool = true;
    fn message_now(&self, access: &Access, update_cursor: i64, log_id: &str) -> pb::Role {
        roles::role_message(self, access.keys(&self.permission_ids, &self.permission_keys), update_cursor, log_id)
    }
}

/// The other spelling of a default role's key (instances made before `org:` prefixes name them
/// `admin` and `basic_member`), as `clerk_mirror_role_alias` in SQL.
pub fn role_alias(key: &str) -> Option<&'static str> {
    match key {
        "admin" => Some("org:admin"),
        "org:admin" => Some("admin"),
        "basic_member" => Some("org:member"),
        "org:member" => Some("basic_member"),
        _ => None,
    }
}

/// Whether `permission` is one of Clerk's system permissions (`org:sys_…`): Billing never gates
/// them, and Clerk's own server-side `has()` does not check them (the mirror answers them from
/// the role like any other).
pub fn is_system(permission: &str) -> bool {
    permission.starts_with("org:sys_")
}

/// The feature a custom permission `org:<feature>:<permission>` belongs to (Clerk's custom
/// permissions are so named); `None` for a system permission or a key of another shape.
pub fn feature_of(permission: &str) -> Option<&str> {
    if is_system(permission) {
        return None;
    }
    let (feature, rest) = permission.strip_prefix("org:")?.split_once(':')?;
    (!feature.is_empty() && !rest.is_empty()).then_some(feature)
}

/// How Billing bears on one permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// It does not: Billing does not gate permissions here, or the key is a system one.
    Off,
    /// Billing gates the key, but the mirror holds no organization plans: Clerk's snapshot sent
    /// with the membership answers.
    Snapshot,
    /// Billing gates the key: allowed only if the organization's plan includes its feature
    /// (whether it does).
    Plan(bool),
}

/// Where a membership's permissions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The role, as held now.
    Role,
    /// The membership's snapshot: the role is not known.
    Snapshot,
    /// The role was deleted while held: nothing.
    DeletedRole,
}

impl Source {
    /// `membership_view`'s word for it.
    pub fn from_view(word: &str) -> Option<Source> {
        match word {
            "role" => Some(Source::Role),
            "membership_snapshot" => Some(Source::Snapshot),
            "deleted_role" => Some(Source::DeletedRole),
            _ => None,
        }
    }

    pub fn wire(self) -> pb::PermissionsSource {
        match self {
            Source::Role => pb::PermissionsSource::Role,
            Source::Snapshot => pb::PermissionsSource::MembershipSnapshot,
            Source::DeletedRole => pb::PermissionsSource::DeletedRole,
        }
    }
}

/// A live membership's effective permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub permissions: Vec<String>,
    /// The role's display name now (a live role's), else the membership's own.
    pub role_name: Option<String>,
    pub source: Source,
}

struct HeldRole {
    key: Option<String>,
    name: Option<String>,
    live: bool,
    permission_ids: Vec<String>,
    permission_keys: Vec<String>,
    /// The role's message with its carried keys (resolved when read).
    message: pb::Role,
}

struct HeldPermission {
    key: Option<String>,
    live: bool,
}

/// Every role and permission, by id, with roles by key.
#[derive(Default)]
pub struct Access {
    roles: HashMap<String, HeldRole>,
    /// Role ids (live and deleted) by key, sorted.
    by_key: HashMap<String, Vec<String>>,
    permissions: HashMap<String, HeldPermission>,
}

impl Access {
    /// Holds `r` (as the API shows it: `message`), replacing what was held.
    pub fn put_role(&mut self, r: &RoleRecord, message: pb::Role) {
        if let Some(old) = self.roles.remove(&r.id)
            && let Some(key) = old.key
            && let Some(ids) = self.by_key.get_mut(&key)
        {
            ids.retain(|id| id != &r.id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
        if let Some(key) = &r.key {
            let ids = self.by_key.entry(key.clone()).or_default();
            if let Err(at) = ids.binary_search(&r.id) {
                ids.insert(at, r.id.clone());
            }
        }
        self.roles.insert(
            r.id.clone(),
            HeldRole {
                key: r.key.clone(),
                name: r.name.clone(),
                live: r.deleted_at.is_none(),
                permission_ids: r.permission_ids.clone(),
                permission_keys: r.permission_keys.clone(),
                message,
            },
        );
    }

    pub fn put_permission(&mut self, r: &PermissionRecord) {
        self.permissions.insert(
            r.id.clone(),
            HeldPermission {
                key: r.key.clone(),
                live: r.deleted_at.is_none(),
            },
        );
    }

    /// Roles and permissions held.
    pub fn counts(&self) -> (usize, usize) {
        (self.roles.len(), self.permissions.len())
    }

    /// The key a role's permission `(id, carried key)` has now: a live permission's, none for a
    /// deleted one, the carried one for one never seen.
    fn key_of<'a>(&'a self, id: &str, carried: &'a str) -> Option<&'a str> {
        match self.permissions.get(id) {
            None => Some(carried).filter(|k| !k.is_empty()),
            Some(p) if p.live => p.key.as_deref().filter(|k| !k.is_empty()),
            Some(_) => None,
        }
    }

    fn resolved(&self, role: &HeldRole) -> Vec<String> {
        self.keys(&role.permission_ids, &role.permission_keys)
    }

    fn grants(&self, role: &HeldRole, permission: &str) -> bool {
        role.permission_ids
            .iter()
            .zip(&role.permission_keys)
            .any(|(id, carried)| self.key_of(id, carried) == Some(permission))
    }

    /// The role with `id` as the API shows it (its permissions resolved now), tombstones too.
    pub fn role(&self, id: &str) -> Option<pb::Role> {
        let held = self.roles.get(id)?;
        Some(pb::Role {
            permissions: self.resolved(held),
            ..held.message.clone()
        })
    }

    /// The live role with `key`, else the live one with its other spelling (least id first).
    pub fn live_role_with_key(&self, key: &str) -> Option<pb::Role> {
        self.role_for(key)
            .filter(|(_, r)| r.live)
            .and_then(|(id, _)| self.role(id))
    }

    /// The role a membership naming `key` has: a live one, else a live one with the other
    /// spelling, else a deleted one (either spelling); the least id among equals.
    fn role_for(&self, key: &str) -> Option<(&str, &HeldRole)> {
        let candidates = |k: &str| {
            self.by_key
                .get(k)
                .into_iter()
                .flatten()
                .filter_map(|id| self.roles.get(id).map(|r| (id.as_str(), r)))
        };
        let exact = || candidates(key);
        let alias = || role_alias(key).into_iter().flat_map(candidates);
        exact()
            .find(|(_, r)| r.live)
            .or_else(|| alias().find(|(_, r)| r.live))
            .or_else(|| exact().next())
            .or_else(|| alias().next())
    }

    /// A live membership's effective permissions, naming role `key` with `snapshot` (what Clerk
    /// sent with it) and `role_name`.
    pub fn effective(&self, key: Option<&str>, snapshot: &[String], role_name: Option<&str>) -> Effective {
        match key.and_then(|k| self.role_for(k)) {
            Some((_, r)) if r.live => Effective {
                permissions: self.resolved(r),
                role_name: r.name.clone().or(role_name.map(str::to_string)),
                source: Source::Role,
            },
            Some(_) => Effective {
                permissions: Vec::new(),
                role_name: role_name.map(str::to_string),
                source: Source::DeletedRole,
            },
            None => Effective {
                permissions: snapshot.to_vec(),
                role_name: role_name.map(str::to_string),
                source: Source::Snapshot,
            },
        }
    }

    /// Whether a live membership naming role `key` has `permission`, and from where (without
    /// building the whole set); `snapshot_has`: whether the membership's own snapshot has it.
    pub fn member_has(&self, key: &str, snapshot_has: bool, permission: &str) -> (bool, Source) {
        match self.role_for(key) {
            Some((_, r)) if r.live => (self.grants(r, permission), Source::Role),
            Some(_) => (false, Source::DeletedRole),
            None => (snapshot_has, Source::Snapshot),
        }
    }

    /// A membership message with its effective permissions (a tombstone as it is).
    pub fn effective_membership(&self, m: &pb::Membership) -> pb::Membership {
        if m.delete_time.is_some() {
            return m.clone();
        }
        let role = Some(m.role.as_str()).filter(|r| !r.is_empty());
        let role_name = Some(m.role_name.as_str()).filter(|r| !r.is_empty());
        let e = self.effective(role, &m.permissions, role_name);
        pb::Membership {
            permissions: e.permissions,
            role_name: e.role_name.unwrap_or_default(),
            permissions_source: e.source.wire() as i32,
            ..m.clone()
        }
    }

    /// The keys of a role's permissions `(ids, carried keys)` now (see [`Access::key_of`]),
    /// distinct, in byte order.
    pub fn keys(&self, ids: &[String], carried: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = ids
            .iter()
            .zip(carried)
            .filter_map(|(id, carried)| self.key_of(id, carried).map(str::to_string))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// What a check needs to know of one (organization, user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub user_live: bool,
    pub organization_live: bool,
    /// The user's current live membership there, if any.
    pub member: Option<Member>,
}

/// A live membership, as a check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub role: String,
    /// Whether it has the permission checked, by its effective permissions.
    pub has: bool,
    pub source: Source,
    /// Whether Clerk's snapshot sent with the membership has it.
    pub snapshot_has: bool,
}

/// A check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub role: String,
    pub source: pb::CheckSource,
}

/// How Billing bears on a check of `permission`: `billing_gates` says whether organization
/// Billing gates custom permissions on this instance, `plans_held` whether the mirror holds any
/// organization plan, and `entitled` whether the organization is entitled to a feature.
pub fn gate(billing_gates: bool, plans_held: bool, permission: &str, entitled: impl FnOnce(&str) -> bool) -> Gate {
    if !billing_gates || is_system(permission) {
        return Gate::Off;
    }
    match feature_of(permission) {
        Some(feature) if plans_held => Gate::Plan(entitled(feature)),
        _ => Gate::Snapshot,
    }
}

/// Decides a check of `permission`: allowed iff the user and the organization are live, the
/// user has a live membership there, and its effective permissions contain it (a role deleted
/// while held denies, always). Where organization Billing gates the key (`gate`), a custom
/// permission `org:<feature>:…` also needs the feature in the organization's plan
/// (`CHECK_SOURCE_PLAN`), or, while the mirror holds no plans, is answered by the membership's
/// snapshot (Clerk's own answer when it sent it).
pub fn check(standing: &Standing, permission: &str, gate: Gate) -> Verdict {
    let member = match &standing.member {
        Some(m) if standing.user_live && standing.organization_live => m,
        _ => {
            return Verdict {
                allowed: false,
                role: String::new(),
                source: pb::CheckSource::NoMembership,
            };
        }
    };
    let (allowed, source) = match member.source {
        // Fail closed, Billing or not: the role is gone.
        Source::DeletedRole => (false, pb::CheckSource::Role),
        _ if gate == Gate::Snapshot && !is_system(permission) => (member.snapshot_has, pb::CheckSource::MembershipSnapshot),
        Source::Role => (member.has, pb::CheckSource::Role),
        Source::Snapshot => (member.snapshot_has, pb::CheckSource::MembershipSnapshot),
    };
    // The role grants it; the plan has the last word.
    let (allowed, source) = match gate {
        Gate::Plan(entitled) if allowed => (entitled, pb::CheckSource::Plan),
        _ => (allowed, source),
    };
    Verdict {
        allowed,
        role: member.role.clone(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::records::time_from_ms;

    fn role(id: &str, key: &str, permissions: &[(&str, &str)]) -> RoleRecord {
        let permissions: Vec<_> = permissions.iter().map(|(id, key)| json!({"id": id, "key": key})).collect();
        RoleRecord::from_clerk(json!({"id": id, "key": key, "name": format!("Role {key}"), "permissions": permissions}))
            .unwrap()
    }

    fn access(roles: &[RoleRecord], permissions: &[PermissionRecord]) -> Access {
        let mut a = Access::default();
        for r in roles {
            a.put_role(r, r.message(1, "log"));
        }
        for p in permissions {
            a.put_permission(p);
        }
        a
    }

    fn permission(id: &str, key: &str) -> PermissionRecord {
        PermissionRecord::from_clerk(json!({"id": id, "key": key})).unwrap()
    }

    #[test]
    fn a_roles_keys_follow_its_permissions_renamed_deleted_or_never_seen() {
        let a = access(
            &[role("role_1", "org:editor", &[("perm_a", "org:a:old"), ("perm_b", "org:b"), ("perm_c", "org:c")])],
            &[
                permission("perm_a", "org:a:new"),
                PermissionRecord::tombstone("perm_b".into(), Some("org:b".into()), time_from_ms(1).unwrap()),
            ],
        );
        assert_eq!(a.role("role_1").unwrap().permissions, ["org:a:new", "org:c"]);
        assert_eq!(a.member_has("org:editor", false, "org:a:old"), (false, Source::Role));
        assert_eq!(a.member_has("org:editor", false, "org:c"), (true, Source::Role));
    }

    #[test]
    fn a_membership_finds_a_live_role_then_its_legacy_spelling_then_a_deleted_one() {
        let gone = time_from_ms(5).unwrap();
        let mut deleted_admin = role("role_0", "admin", &[]);
        deleted_admin.deleted_at = Some(gone);
        let a = access(
            &[deleted_admin, role("role_9", "org:admin", &[("perm_x", "org:x")])],
            &[],
        );
        // A deleted exact key loses to a live other spelling.
        let e = a.effective(Some("admin"), &["org:snap".into()], None);
        assert_eq!((e.permissions, e.source), (vec!["org:x".to_string()], Source::Role));
        assert_eq!(a.live_role_with_key("admin").unwrap().id, "role_9");
        // Only a deleted one: nothing, and said so.
        let mut b = Access::default();
        let mut only = role("role_1", "org:editor", &[("perm_x", "org:x")]);
        only.deleted_at = Some(gone);
        b.put_role(&only, only.message(1, "log"));
        let e = b.effective(Some("org:editor"), &["org:x".into()], Some("Editor"));
        assert_eq!((e.permissions.len(), e.source, e.role_name.as_deref()), (0, Source::DeletedRole, Some("Editor")));
        // None known: the snapshot.
        let e = b.effective(Some("org:other"), &["org:x".into()], None);
        assert_eq!((e.permissions, e.source), (vec!["org:x".to_string()], Source::Snapshot));
        assert!(b.live_role_with_key("org:editor").is_none());
    }

    #[test]
    fn a_check_is_allowed_only_for_a_live_user_and_organization_with_a_membership_whose_role_grants_it() {
        let member = |has, source, snapshot_has| Standing {
            user_live: true,
            organization_live: true,
            member: Some(Member {
                role: "org:editor".into(),
                has,
                source,
                snapshot_has,
            }),
        };
        let v = |s: &Standing, p: &str, gate: Gate| {
            let v = check(s, p, gate);
            (v.allowed, v.source)
        };
        use pb::CheckSource as C;
        use Gate::{Off, Plan, Snapshot};
        assert_eq!(v(&member(true, Source::Role, false), "org:a:b", Off), (true, C::Role));
        assert_eq!(v(&member(false, Source::Role, true), "org:a:b", Off), (false, C::Role));
        assert_eq!(v(&member(false, Source::Snapshot, true), "org:a:b", Off), (true, C::MembershipSnapshot));
        // Billing gates custom permissions, never system ones, and never revives a deleted role:
        // without plans, by the snapshot; with plans, by the role and then the plan.
        assert_eq!(v(&member(true, Source::Role, false), "org:a:b", Snapshot), (false, C::MembershipSnapshot));
        assert_eq!(v(&member(true, Source::Role, false), "org:sys_profile:manage", Snapshot), (true, C::Role));
        assert_eq!(v(&member(false, Source::DeletedRole, true), "org:a:b", Snapshot), (false, C::Role));
        assert_eq!(v(&member(false, Source::DeletedRole, true), "org:a:b", Off), (false, C::Role));
        assert_eq!(v(&member(true, Source::Role, false), "org:a:b", Plan(true)), (true, C::Plan));
        assert_eq!(v(&member(true, Source::Role, false), "org:a:b", Plan(false)), (false, C::Plan));
        assert_eq!(v(&member(false, Source::Role, true), "org:a:b", Plan(true)), (false, C::Role));
        assert_eq!(v(&member(false, Source::Snapshot, true), "org:a:b", Plan(false)), (false, C::Plan));
        assert_eq!(v(&member(false, Source::DeletedRole, true), "org:a:b", Plan(true)), (false, C::Role));
        assert_eq!(
            (feature_of("org:invoices:manage"), feature_of("org:sys_memberships:read"), feature_of("org:x"), feature_of("org::y")),
            (Some("invoices"), None, None, None)
        );
        for (user_live, organization_live) in [(false, true), (true, false)] {
            let s = Standing {
                user_live,
                organization_live,
                ..member(true, Source::Role, true)
            };
            let verdict = check(&s, "org:a:b", Gate::Off);
            assert_eq!((verdict.allowed, verdict.role.as_str(), verdict.source), (false, "", C::NoMembership));
        }
        let none = Standing {
            member: None,
            ..member(true, Source::Role, true)
        };
        assert_eq!(v(&none, "org:a:b", Gate::Plan(true)), (false, C::NoMembership));
    }
}
