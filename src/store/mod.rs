//! The projections as Rust values: one record type per entity, read from and written to the
//! `users`, `organizations` and `memberships` tables, and carried in the change log as JSON.

pub mod admin;
pub mod changes;
pub mod convert;
pub mod fields;
pub mod kind;
pub mod read;
pub mod records;

pub use kind::{AnyRecord, EntityType, Kind};
pub use records::{MembershipRecord, OrganizationRecord, Record, UserRecord, Version, Versioned};
