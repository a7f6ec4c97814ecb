//! The read API's errors, mapped to `tonic::Status` here and nowhere else. Every status carries a
//! `google.rpc.ErrorInfo` (domain `clerkmirror`, an UPPER_SNAKE_CASE reason, lowerCamelCase
//! metadata); internal causes are logged, never returned.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo` domain of every error.
pub const DOMAIN: &str = "clerkmirror";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing by that name (or only a tombstone, without `show_deleted`).
    /// `cursor` is the change-log position the read reflected: watching from it shows the
    /// entity arriving.
    #[error("{what} `{name}` not found")]
    NotFound {
        what: &'static str,
        name: String,
        cursor: String,
    },
    /// A request field is wrong.
    #[error("invalid `{field}`: {description}")]
    InvalidArgument {
        field: String,
        reason: &'static str,
        description: String,
    },
    /// A filter that does not parse or names what does not exist; `position` is a byte offset.
    #[error("invalid `filter` at position {position}: {message}")]
    InvalidFilter { position: usize, message: String },
    /// A start cursor older than the retained log, or from another database: relist and resume.
    #[error("{why}: list again, then watch from the list's cursor")]
    CursorExpired { why: String, oldest_cursor: String },
    /// A start cursor past the database's head.
    #[error("the cursor is ahead of this database's change log")]
    CursorInFuture { head_cursor: String },
    /// An `at_least_as_fresh` read whose cursor this replica had not applied by the deadline.
    #[error("this replica has not yet applied the requested cursor; retry, or read fully_consistent")]
    NotYetConsistent {
        replica_cursor: String,
        requested_cursor: String,
    },
    /// A watcher that stopped reading for too long; resume from `resume_cursor`.
    #[error("the stream was not read for too long; resume from the resume cursor")]
    ConsumerTooSlow { resume_cursor: String },
    /// This replica serves as many streams as it may.
    #[error("too many watch streams on this replica (at most {limit}); retry later or on another replica")]
    TooManyWatchers { limit: usize },
    /// This replica serves as many requests at once as it may (load shedding, never queueing).
    #[error(
        "this replica is serving as many requests as it may (at most {limit} at once); retry with backoff or on another replica"
    )]
    TooManyRequests { limit: usize },
    /// The server is stopping; resume from `resume_cursor` on another replica or after restart.
    #[error("the server is shutting down; resume from the resume cursor")]
    ShuttingDown { resume_cursor: String },
    /// The database cannot be reached; retry.
    #[error("the database is unavailable; retry later")]
    Unavailable(#[source] sqlx::Error),
    /// A bug or an unexpected database error.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A cursor of another change log than this database's (restored or wiped).
    pub fn cursor_of_another_log(oldest_cursor: String) -> Self {
        ApiError::CursorExpired {
            why: "the cursor comes from another database (restored or wiped?)".into(),
            oldest_cursor,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: &'static str, description: impl Into<String>) -> Self {
        ApiError::InvalidArgument {
            field: field.into(),
            reason,
            description: description.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        let metadata = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        match &e {
            ApiError::NotFound { name, cursor, .. } => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_error_info(
                    "RESOURCE_NOT_FOUND",
                    DOMAIN,
                    metadata(&[("resourceName", name), ("cursor", cursor)]),
                ),
            ),
            ApiError::InvalidArgument {
                field,
                reason,
                description,
            } => {
                let mut details = ErrorDetails::with_error_info(*reason, DOMAIN, metadata(&[("field", field)]));
                details.add_bad_request_violation(field.clone(), description.clone());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::InvalidFilter {
                position,
                message: description,
            } => {
                let position = position.to_string();
                let mut details = ErrorDetails::with_error_info(
                    "INVALID_FILTER",
                    DOMAIN,
                    metadata(&[("field", "filter"), ("position", &position)]),
                );
                details.add_bad_request_violation("filter", description.clone());
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::CursorExpired { oldest_cursor, .. } => Status::with_error_details(
                Code::OutOfRange,
                message,
                ErrorDetails::with_error_info("CURSOR_EXPIRED", DOMAIN, metadata(&[("oldestCursor", oldest_cursor)])),
            ),
            ApiError::CursorInFuture { head_cursor } => Status::with_error_details(
                Code::OutOfRange,
                message,
                ErrorDetails::with_error_info("CURSOR_IN_FUTURE", DOMAIN, metadata(&[("headCursor", head_cursor)])),
            ),
            ApiError::NotYetConsistent {
                replica_cursor,
                requested_cursor,
            } => {
                let mut details = ErrorDetails::with_error_info(
                    "NOT_YET_CONSISTENT",
                    DOMAIN,
                    metadata(&[("replicaCursor", replica_cursor), ("requestedCursor", requested_cursor)]),
                );
                details.set_retry_info(Some(std::time::Duration::from_millis(100)));
                Status::with_error_details(Code::Unavailable, message, details)
            }
            ApiError::ConsumerTooSlow { resume_cursor } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_error_info(
                    "CONSUMER_TOO_SLOW",
                    DOMAIN,
                    metadata(&[("resumeCursor", resume_cursor)]),
                ),
            ),
            ApiError::TooManyWatchers { limit } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_error_info("TOO_MANY_WATCHERS", DOMAIN, metadata(&[("limit", &limit.to_string())])),
            ),
            ApiError::TooManyRequests { limit } => {
                let mut details = ErrorDetails::with_error_info(
                    "TOO_MANY_REQUESTS",
                    DOMAIN,
                    metadata(&[("limit", &limit.to_string())]),
                );
                details.set_retry_info(Some(std::time::Duration::from_millis(100)));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::ShuttingDown { resume_cursor } => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_error_info("SHUTTING_DOWN", DOMAIN, metadata(&[("resumeCursor", resume_cursor)])),
            ),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                let mut details = ErrorDetails::with_error_info("DATABASE_UNAVAILABLE", DOMAIN, HashMap::new());
                details.set_retry_info(Some(std::time::Duration::from_secs(1)));
                Status::with_error_details(Code::Unavailable, message, details)
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    message,
                    ErrorDetails::with_error_info("INTERNAL", DOMAIN, HashMap::new()),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::{DescriptorProto, FileDescriptorSet};

    /// Every message of `file` (nested ones too) by full name, with its fields as
    /// (name, number, label, type, type name).
    fn messages(set: &FileDescriptorSet, file: &str) -> Vec<(String, Vec<(String, i32, i32, i32, String)>)> {
        fn walk(prefix: &str, m: &DescriptorProto, out: &mut Vec<(String, Vec<(String, i32, i32, i32, String)>)>) {
            let name = format!("{prefix}.{}", m.name());
            let fields = m
                .field
                .iter()
                .map(|f| {
                    (
                        f.name().to_string(),
                        f.number(),
                        f.label() as i32,
                        f.r#type() as i32,
                        f.type_name().to_string(),
                    )
                })
                .collect();
            out.push((name.clone(), fields));
            for nested in &m.nested_type {
                walk(&name, nested, out);
            }
        }
        let file = set
            .file
            .iter()
            .find(|f| f.name() == file)
            .unwrap_or_else(|| panic!("{file} not in the set"));
        let mut out = Vec::new();
        for m in &file.message_type {
            walk(&format!(".{}", file.package()), m, &mut out);
        }
        out.sort();
        out
    }

    #[test]
    fn the_error_details_reflection_serves_describe_exactly_what_tonic_types_encodes() {
        let served = FileDescriptorSet::decode(crate::pb::ERROR_DETAILS_FILE_DESCRIPTOR_SET).unwrap();
        let encoded = FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET).unwrap();
        // tonic-types names its copy without its directory; the served one has googleapis' name.
        let described = messages(&served, "google/rpc/error_details.proto");
        assert_eq!(described, messages(&encoded, "error_details.proto"));
        for sent in [
            ".google.rpc.ErrorInfo",
            ".google.rpc.BadRequest",
            ".google.rpc.RetryInfo",
        ] {
            assert!(described.iter().any(|(name, _)| name == sent), "{sent}");
        }
        let names: Vec<&str> = served.file.iter().map(|f| f.name()).collect();
        assert!(names.contains(&"google/protobuf/duration.proto"), "{names:?}");
    }
}
