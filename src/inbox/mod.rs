//! The inbox: every event the mirror will apply, stored before anything acts on it. Webhooks
//! (through ingest's group-commit writer), backfill, reconcile and replay write to it through
//! [`insert`], which NOTIFYs the applier in the same transaction; the applier reads it through
//! [`pending`]; operators see it through [`list_inbox`] and put dead letters back with [`replay`].
//! Each row names its [`Source`]; rows the mirror produces itself rank below Clerk's
//! (docs/inbox.md).

pub mod envelope;
mod insert;
mod list;
mod pending;
pub mod redact;
mod replay;
mod row;
mod source;

pub use insert::{insert, insert_in};
pub use list::{InboxEntry, list_inbox};
pub use pending::{InboxEvent, pending};
pub use replay::{Replay, replay};
pub use row::InboxRow;
pub use source::{Rank, Source};
