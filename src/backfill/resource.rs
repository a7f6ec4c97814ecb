//! What the Backend API knows of each kind, and only that: where it lists the kind, how it finds
//! one entity to confirm that it is gone, and what a delete event of it carries ([`Listed`],
//! implemented here per kind). Everything the kind itself declares (table, parent columns, the
//! events that write and delete it) comes from [`Kind`]; [`Resource::of`] puts the two together
//! into the rows of [`RESOURCES`], which backfill and reconcile walk without knowing any kind.
//!
//! Adding a listed kind: its `impl Listed` (a name and Clerk's object name; a look-up or a delete
//! shape of its own only when the defaults do not fit) and one line in [`RESOURCES`].

use serde_json::{Value, json};

use crate::store::{
    DomainRecord, EntityType, InvitationRecord, Kind, MembershipRecord, OrganizationRecord, PermissionRecord, RoleRecord,
    SubscriptionItemRecord, UserRecord,
};

/// A kind as the Backend API lists it.
pub trait Listed: Kind {
    /// The list's path under the API's base (`/users`); also the name of the resource's
    /// checkpoint, of its drift report entry and the prefix of its inbox rows' keys.
    const NAME: &'static str;
    /// Clerk's `object` name for one entity (`user`), as a delete event carries it.
    const OBJECT: &'static str;
    /// Extra query parameters of the list (`&include_members_count=true`).
    const QUERY: &'static str = "";
    /// Where the total is asked when the list's answer does not carry `total_count` (`GET /users`
    /// answers a bare array).
    const COUNT_PATH: Option<&'static str> = None;
    /// The event type an imported object is applied as: the kind's last upsert (its update).
    const APPLIED_AS: &'static str = Self::UPSERTED_BY[Self::UPSERTED_BY.len() - 1];
    /// The list's order parameter: oldest first, so that offset paging never skips an entity
    /// created mid-scan (a list that cannot be ordered lists newest first instead).
    const ORDER: &'static str = "&order_by=%2Bcreated_at";
    /// Fields the list's objects lack that the mirror keeps as it holds them (a subscription
    /// item's `subscription_id`, which only webhooks carry): filled in from the projection's
    /// column of the same name before an object is enqueued.
    const KEEP_HELD: &'static [&'static str] = &[];
    /// Whether an instance may not offer the list at all (Billing off): a refusal then skips the
    /// resource, said in the log and the summary, instead of failing the run.
    const OPTIONAL: bool = false;

    /// How to ask Clerk whether the entity `id` (whose parents the mirror holds as `parents`) is
    /// still there: `GET /{NAME}/{id}` unless the kind says otherwise; `None` when no look-up can
    /// say (a parent it needs is unknown), and reconcile then leaves the entity alone.
    fn lookup(id: &str, parents: &Parents) -> Option<Lookup> {
        let _ = parents;
        Some(Lookup::Get(format!("/{}/{id}", Self::NAME)))
    }

    /// The `data` of the delete event reconcile writes for an entity Clerk no longer has: what
    /// the kind's [`Kind::from_delete`] reads.
    fn deleted(id: &str, parents: &Parents) -> Value {
        let _ = parents;
        json!({"object": Self::OBJECT, "id": id, "deleted": true})
    }
}

impl Listed for UserRecord {
    const NAME: &'static str = "users";
    const OBJECT: &'static str = "user";
    const COUNT_PATH: Option<&'static str> = Some("/users/count");
}

impl Listed for OrganizationRecord {
    const NAME: &'static str = "organizations";
    const OBJECT: &'static str = "organization";
    const QUERY: &'static str = "&include_members_count=true";
}

impl Listed for MembershipRecord {
    const NAME: &'static str = "organization_memberships";
    const OBJECT: &'static str = "organization_membership";

    /// There is no `GET` of one membership: it is looked for among its organization's
    /// memberships of its user.
    fn lookup(_id: &str, parents: &Parents) -> Option<Lookup> {
        let org = parents.of(EntityType::Organization)?;
        let user = parents.of(EntityType::User)?;
        Some(Lookup::Among(format!(
            "/organizations/{org}/memberships?limit=100&user_id={user}"
        )))
    }

    /// Clerk's deleted membership names its organization and user where its object does.
    fn deleted(id: &str, parents: &Parents) -> Value {
        json!({"object": Self::OBJECT, "id": id,
               "organization": {"id": parents.of(EntityType::Organization)},
               "public_user_data": {"user_id": parents.of(EntityType::User)}})
    }
}

/// The instance's permissions (`GET /organization_permissions`, `{data, total_count}`).
impl Listed for PermissionRecord {
    const NAME: &'static str = "organization_permissions";
    const OBJECT: &'static str = "permission";
}

/// The instance's roles, with their permissions (`GET /organization_roles`). Clerk sends no
/// events for the default roles (`org:admin`, `org:member`): this list is where they come from.
impl Listed for RoleRecord {
    const NAME: &'static str = "organization_roles";
    const OBJECT: &'static str = "role";
}

/// The instance's organization domains (`GET /organization_domains`, `{data, total_count}`).
impl Listed for DomainRecord {
    const NAME: &'static str = "organization_domains";
    const OBJECT: &'static str = "organization_domain";

    /// One domain is looked up under its organization.
    fn lookup(id: &str, parents: &Parents) -> Option<Lookup> {
        let org = parents.of(EntityType::Organization)?;
        Some(Lookup::Get(format!("/organizations/{org}/domains/{id}")))
    }

    /// Clerk's delete names only the domain; the mirror's own says its organization too.
    fn deleted(id: &str, parents: &Parents) -> Value {
        json!({"object": Self::OBJECT, "id": id, "deleted": true,
               "organization_id": parents.of(EntityType::Organization)})
    }
}

/// The instance's organization invitations, every status (`GET /organization_invitations`,
/// `{data, total_count}`; their acceptance URLs are removed before the rows are stored).
impl Listed for InvitationRecord {
    const NAME: &'static str = "organization_invitations";
    const OBJECT: &'static str = "organization_invitation";
    /// Whatever the status: the object's `status` says it.
    const APPLIED_AS: &'static str = "organizationInvitation.created";

    /// One invitation is looked up under its organization.
    fn lookup(id: &str, parents: &Parents) -> Option<Lookup> {
        let org = parents.of(EntityType::Organization)?;
        Some(Lookup::Get(format!("/organizations/{org}/invitations/{id}")))
    }
}

/// Clerk Billing's subscription items, instance-wide, every status the list shows, the default
/// plan's included (`GET /billing/subscription_items?include_free=true`, newest first: it takes
/// no order). What entitlements need comes from items alone; their subscriptions come with the
/// webhooks (a listed item names no subscription, so the one the mirror holds is kept, and one
/// request per payer would take hours at Clerk's rate limits). No event deletes an item and an
/// item absent from the list is not looked up: reconcile never tombstones one.
impl Listed for SubscriptionItemRecord {
    const NAME: &'static str = "billing/subscription_items";
    const OBJECT: &'static str = "commerce_subscription_item";
    const QUERY: &'static str = "&include_free=true";
    const ORDER: &'static str = "";
    const APPLIED_AS: &'static str = "subscriptionItem.updated";
    const KEEP_HELD: &'static [&'static str] = &["subscription_id"];
    const OPTIONAL: bool = true;

    fn lookup(_id: &str, _parents: &Parents) -> Option<Lookup> {
        None
    }
}

/// What a backfill fetches and reconcile compares, in this order (memberships, domains and
/// invitations after their organizations and users; then the permissions and roles, a few
/// requests; then Billing's items).
pub const RESOURCES: [Resource; 8] = [
    Resource::of::<UserRecord>(),
    Resource::of::<OrganizationRecord>(),
    Resource::of::<MembershipRecord>(),
    Resource::of::<DomainRecord>(),
    Resource::of::<InvitationRecord>(),
    Resource::of::<PermissionRecord>(),
    Resource::of::<RoleRecord>(),
    Resource::of::<SubscriptionItemRecord>(),
];

/// The roles and permissions alone: what `serve` reads at start (their list decides every
/// permission check, and the default roles have no events).
pub const ACCESS_RESOURCES: [Resource; 2] = [Resource::of::<PermissionRecord>(), Resource::of::<RoleRecord>()];

/// A direct look-up of one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// `GET` this path answers the entity, or 404 when it is gone.
    Get(String),
    /// `GET` this path answers a page that holds the entity (by its `id`) unless it is gone.
    Among(String),
}

/// The parents the mirror holds for one entity, by kind (the kind's `PARENTS` columns).
#[derive(Debug, Clone, Copy)]
pub struct Parents<'a> {
    pub columns: &'static [(EntityType, &'static str)],
    /// One value per column, in the columns' order.
    pub ids: &'a [Option<String>],
}

impl Parents<'_> {
    /// The id of the parent of kind `kind`, when the kind has one and it is known.
    pub fn of(&self, kind: EntityType) -> Option<&str> {
        let i = self.columns.iter().position(|(t, _)| *t == kind)?;
        self.ids.get(i)?.as_deref()
    }
}

/// One listed kind: what the kind declares and what the Backend API knows of it, together.
#[derive(Debug, Clone, Copy)]
pub struct Resource {
    /// The kind.
    pub kind: EntityType,
    /// The checkpoint name, the report's entity name, the key prefix, and the list's path.
    pub name: &'static str,
    /// The kind's projection table.
    pub table: &'static str,
    /// The kind's parents and the columns naming them.
    pub parents: &'static [(EntityType, &'static str)],
    /// Extra query parameters of the list.
    pub query: &'static str,
    /// The list's order parameter (see [`Listed::ORDER`]).
    pub order: &'static str,
    /// Fields filled in from the projection (see [`Listed::KEEP_HELD`]).
    pub keep_held: &'static [&'static str],
    /// Whether a refusal skips the resource (see [`Listed::OPTIONAL`]).
    pub optional: bool,
    /// Where the total is asked when the list does not say.
    pub count_path: Option<&'static str>,
    /// The event type its objects are applied as.
    pub event_type: &'static str,
    /// The event type that deletes one; `None` for a kind no event deletes (reconcile then
    /// never tombstones it).
    pub delete_type: Option<&'static str>,
    lookup: fn(&str, &Parents) -> Option<Lookup>,
    deleted: fn(&str, &Parents) -> Value,
}

impl Resource {
    /// The resource of the kind `K`.
    pub const fn of<K: Listed>() -> Resource {
        Resource {
            kind: K::TYPE,
            name: K::NAME,
            table: K::TABLE,
            parents: K::PARENTS,
            query: K::QUERY,
            order: K::ORDER,
            keep_held: K::KEEP_HELD,
            optional: K::OPTIONAL,
            count_path: K::COUNT_PATH,
            event_type: K::APPLIED_AS,
            delete_type: match K::DELETED_BY {
                [first, ..] => Some(*first),
                [] => None,
            },
            lookup: K::lookup,
            deleted: K::deleted,
        }
    }

    /// The path of one page of the list.
    pub fn page_path(&self, limit: i64, offset: i64) -> String {
        format!(
            "/{}?limit={limit}&offset={offset}{}{}",
            self.name, self.order, self.query
        )
    }

    /// How to confirm that the entity `id` is gone (see [`Listed::lookup`]).
    pub fn lookup(&self, id: &str, parents: &[Option<String>]) -> Option<Lookup> {
        (self.lookup)(id, &self.parents_of(parents))
    }

    /// The `data` of a delete event of the entity `id` (see [`Listed::deleted`]).
    pub fn deleted(&self, id: &str, parents: &[Option<String>]) -> Value {
        (self.deleted)(id, &self.parents_of(parents))
    }

    fn parents_of<'a>(&self, ids: &'a [Option<String>]) -> Parents<'a> {
        Parents {
            columns: self.parents,
            ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::kind::with_kind;

    fn some(ids: &[&str]) -> Vec<Option<String>> {
        ids.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn the_resources_keep_their_names_paths_and_event_types() {
        let got: Vec<_> = RESOURCES
            .iter()
            .map(|r| {
                (
                    r.kind,
                    r.name,
                    r.table,
                    r.query,
                    r.count_path,
                    r.event_type,
                    r.delete_type,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    EntityType::User,
                    "users",
                    "users",
                    "",
                    Some("/users/count"),
                    "user.updated",
                    Some("user.deleted")
                ),
                (
                    EntityType::Organization,
                    "organizations",
                    "organizations",
                    "&include_members_count=true",
                    None,
                    "organization.updated",
                    Some("organization.deleted")
                ),
                (
                    EntityType::Membership,
                    "organization_memberships",
                    "memberships",
                    "",
                    None,
                    "organizationMembership.updated",
                    Some("organizationMembership.deleted")
                ),
                (
                    EntityType::Domain,
                    "organization_domains",
                    "domains",
                    "",
                    None,
                    "organizationDomain.updated",
                    Some("organizationDomain.deleted")
                ),
                (
                    EntityType::Invitation,
                    "organization_invitations",
                    "invitations",
                    "",
                    None,
                    "organizationInvitation.created",
                    None
                ),
                (
                    EntityType::Permission,
                    "organization_permissions",
                    "permissions",
                    "",
                    None,
                    "permission.updated",
                    Some("permission.deleted")
                ),
                (
                    EntityType::Role,
                    "organization_roles",
                    "roles",
                    "",
                    None,
                    "role.updated",
                    Some("role.deleted")
                ),
                (
                    EntityType::SubscriptionItem,
                    "billing/subscription_items",
                    "subscription_items",
                    "&include_free=true",
                    None,
                    "subscriptionItem.updated",
                    None
                ),
            ]
        );
        assert_eq!(
            RESOURCES[1].page_path(500, 1000),
            "/organizations?limit=500&offset=1000&order_by=%2Bcreated_at&include_members_count=true"
        );
    }

    #[test]
    fn a_user_and_an_organization_are_looked_up_by_id_and_a_membership_under_its_organization_and_user() {
        assert_eq!(
            RESOURCES[0].lookup("user_1", &[]),
            Some(Lookup::Get("/users/user_1".into()))
        );
        assert_eq!(
            RESOURCES[1].lookup("org_1", &[]),
            Some(Lookup::Get("/organizations/org_1".into()))
        );
        assert_eq!(
            RESOURCES[2].lookup("orgmem_1", &some(&["org_1", "user_1"])),
            Some(Lookup::Among(
                "/organizations/org_1/memberships?limit=100&user_id=user_1".into()
            ))
        );
        assert_eq!(
            RESOURCES[6].lookup("role_1", &[]),
            Some(Lookup::Get("/organization_roles/role_1".into()))
        );
        assert_eq!(
            RESOURCES[5].lookup("perm_1", &[]),
            Some(Lookup::Get("/organization_permissions/perm_1".into()))
        );
        assert_eq!(
            RESOURCES[3].lookup("orgdmn_1", &some(&["org_1"])),
            Some(Lookup::Get("/organizations/org_1/domains/orgdmn_1".into()))
        );
        assert_eq!(RESOURCES[3].lookup("orgdmn_1", &[None]), None, "a domain whose organization is unknown");
        assert_eq!(
            RESOURCES[4].lookup("orginv_1", &some(&["org_1"])),
            Some(Lookup::Get("/organizations/org_1/invitations/orginv_1".into()))
        );
        assert_eq!(RESOURCES[7].lookup("csub_item_1", &[]), None, "an item absent from the list is left alone");
        assert_eq!(
            RESOURCES[7].page_path(500, 0),
            "/billing/subscription_items?limit=500&offset=0&include_free=true",
            "newest first: the list takes no order"
        );
        assert_eq!(
            RESOURCES[2].lookup("orgmem_1", &[Some("org_1".into()), None]),
            None,
            "without its user a membership cannot be looked up"
        );
    }

    #[test]
    fn every_resources_delete_event_is_one_its_kind_reads_back_with_its_parents() {
        let at = Utc::now();
        // Every kind but invitations and subscription items, which no event deletes (reconcile
        // never tombstones them).
        let deletable: Vec<&Resource> = RESOURCES.iter().filter(|r| r.delete_type.is_some()).collect();
        assert_eq!(deletable.len(), RESOURCES.len() - 2);
        for r in deletable {
            let ids: Vec<String> = r.parents.iter().map(|(t, _)| format!("{}_9", t.as_str())).collect();
            let parents: Vec<Option<String>> = ids.iter().cloned().map(Some).collect();
            let data = r.deleted("x_1", &parents);
            with_kind!(r.kind, K => {
                let tombstone = K::from_delete(crate::store::records::clean(data), at).unwrap();
                assert_eq!(crate::store::Record::id(&tombstone), "x_1", "{}", r.name);
                assert_eq!(tombstone.deleted_at(), Some(at), "{}", r.name);
                for ((t, _), id) in r.parents.iter().zip(&ids) {
                    assert_eq!(tombstone.parent(*t), Some(id.as_str()), "{}", r.name);
                }
            });
        }
    }

    #[test]
    fn every_resource_is_applied_as_one_of_its_kinds_upserts() {
        for r in &RESOURCES {
            let (kind, deletes) = crate::store::kind::kind_of_event(r.event_type).unwrap();
            assert_eq!((kind, deletes), (r.kind, false), "{}", r.name);
            if let Some(delete_type) = r.delete_type {
                let (kind, deletes) = crate::store::kind::kind_of_event(delete_type).unwrap();
                assert_eq!((kind, deletes), (r.kind, true), "{}", r.name);
            }
        }
    }
}
