//! The projections as Rust values: one record type per entity, read from and written to the
//! `users`, `organizations`, `memberships`, `roles`, `permissions`, `domains` and `invitations` tables, and carried in the
//! change log as JSON.

pub mod access;
pub mod admin;
pub mod billing;
pub mod change_message;
pub mod changes;
pub mod convert;
pub mod domains;
pub mod entitlement;
pub mod fields;
pub mod invitations;
pub mod kind;
pub mod plans;
pub mod read;
pub mod records;
pub mod roles;
#[cfg(test)]
pub mod test_kind;

pub use kind::Kind;

// Every kind the mirror keeps, one line each (see `kind.rs`): the one list from which
// `EntityType`, `AnyRecord` and the dispatch macros come.
kind::declare_kinds! {$
    User(crate::store::UserRecord) = "user",
    Organization(crate::store::OrganizationRecord) = "organization",
    Membership(crate::store::MembershipRecord) = "membership",
    Role(crate::store::roles::RoleRecord) = "role",
    Permission(crate::store::roles::PermissionRecord) = "permission",
    Domain(crate::store::domains::DomainRecord) = "domain",
    Invitation(crate::store::invitations::InvitationRecord) = "invitation",
    SubscriptionItem(crate::store::billing::SubscriptionItemRecord) = "subscription_item",
    Subscription(crate::store::billing::SubscriptionRecord) = "subscription",
    Plan(crate::store::plans::PlanRecord) = "plan",
    PaymentAttempt(crate::store::billing::PaymentAttemptRecord) = "payment_attempt",
    #[cfg(test)]
    Widget(crate::store::test_kind::WidgetRecord) = "widget",
}

pub use records::{MembershipRecord, OrganizationRecord, Record, UserRecord, Version, Versioned};
pub use billing::{PaymentAttemptRecord, SubscriptionItemRecord, SubscriptionRecord};
pub use domains::DomainRecord;
pub use invitations::InvitationRecord;
pub use plans::PlanRecord;
pub use roles::{PermissionRecord, RoleRecord};
