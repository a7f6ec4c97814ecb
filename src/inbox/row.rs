//! One row to store in the inbox, from whichever source.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::Source;

/// One row for the inbox.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub source: Source,
    /// The idempotency key within the source: the `svix-id` for webhooks.
    pub event_key: String,
    pub event_type: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub instance_id: Option<String>,
    /// The raw body (`None`: none to keep). The inbox stores it as `inbox::redact` keeps it.
    pub body: Option<Bytes>,
    /// The W3C `traceparent` of the webhook's span, when traces are exported.
    pub trace_context: Option<String>,
}
