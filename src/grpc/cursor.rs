//! A client's cursor in a request, read as a position in this server's log.

use super::error::ApiError;
pub use crate::pb::cursor::{Cursor, MalformedCursor};

/// The seq of a client's cursor in request field `field`, if it is a cursor of the log `log_id`;
/// `Ok(None)`: another log's (a restored or wiped database: `ApiError::cursor_of_another_log`).
pub fn seq_in_log(field: &str, text: &str, log_id: &str) -> Result<Option<i64>, ApiError> {
    let cursor =
        Cursor::decode(text).map_err(|_| ApiError::invalid(field, "INVALID_CURSOR", "not a clerk-mirror cursor"))?;
    Ok((cursor.log_id == log_id).then_some(cursor.seq))
}
