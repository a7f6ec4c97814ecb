//! Webhook ingest: `POST /webhooks/clerk` verifies the Svix signature over the raw bytes, stores
//! the event in the `inbox` (group commit) and acknowledges only after the commit.

pub mod http;
pub mod verify;
pub mod writer;

/// The envelope moved to the inbox; this name stays for callers of `ingest::envelope`.
pub use crate::inbox::envelope;
pub use http::{IngestError, IngestState, router};
pub use writer::{InboxWriter, Stored};
