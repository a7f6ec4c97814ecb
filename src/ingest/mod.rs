//! Webhook ingest: `POST /webhooks/clerk` verifies the Svix signature over the raw bytes, stores
//! the event in the `inbox` (group commit) and acknowledges only after the commit.

pub mod envelope;
pub mod http;
pub mod verify;
pub mod writer;

pub use http::{IngestError, IngestState, router};
pub use writer::{InboxRow, InboxWriter, Stored};
