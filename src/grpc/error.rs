//! The read API's errors, mapped to `tonic::Status` here and nowhere else. Every status carries a
//! `google.rpc.ErrorInfo` (domain `clerkmirror`, an UPPER_SNAKE_CASE reason, lowerCamelCase
//! metadata); internal causes are logged, never returned.

use std::collections::HashMap;
use std::time::Duration;

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
    /// A request larger than `--max-message-bytes` allows (read whole before it is answered,
    /// where the protocol needs that: gRPC-Web over HTTP/1.1).
    #[error("the request is larger than this server accepts (at most {limit} bytes a message; see --max-message-bytes)")]
    RequestTooLarge { limit: usize },
    /// The request's body ended before it was complete (the client went away or broke off).
    #[error("the request body could not be read whole: {why}")]
    IncompleteRequest { why: String },
    /// The server is stopping; resume from `resume_cursor` on another replica or after restart.
    #[error("the server is shutting down; resume from the resume cursor")]
    ShuttingDown { resume_cursor: String },
    /// The request cannot be served in this server's configuration (`description` says what to
    /// change).
    #[error("{description}")]
    FailedPrecondition {
        reason: &'static str,
        description: String,
    },
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

impl From<crate::filter::selection::SelectionError> for ApiError {
    fn from(e: crate::filter::selection::SelectionError) -> Self {
        use crate::filter::selection::SelectionError;
        match e {
            SelectionError::Invalid { field, reason, message } => ApiError::invalid(field, reason, message),
            SelectionError::Filter { position, message } => ApiError::InvalidFilter { position, message },
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
    /// Logs an internal cause (it is never returned), then builds the status from its parts.
    fn from(e: ApiError) -> Status {
        match &e {
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "database unavailable"),
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
        let parts = e.status_parts();
        let mut details = ErrorDetails::with_error_info(parts.reason, DOMAIN, parts.metadata);
        if let Some((field, description)) = parts.violation {
            details.add_bad_request_violation(field, description);
        }
        if let Some(delay) = parts.retry {
            details.set_retry_info(Some(delay));
        }
        Status::with_error_details(parts.code, e.to_string(), details)
    }
}

/// What a status says beside its message: the code, the `ErrorInfo` reason and metadata, the
/// request field at fault (a `BadRequest` violation), and when to retry (`RetryInfo`).
struct StatusParts {
    code: Code,
    reason: &'static str,
    metadata: HashMap<String, String>,
    violation: Option<(String, String)>,
    retry: Option<Duration>,
}

impl StatusParts {
    /// `code` with an `ErrorInfo` of `reason` and `metadata` (lowerCamelCase keys).
    fn new(code: Code, reason: &'static str, metadata: &[(&str, &str)]) -> StatusParts {
        StatusParts {
            code,
            reason,
            metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            violation: None,
            retry: None,
        }
    }

    /// With a `BadRequest` violation of `field`.
    fn violation(mut self, field: &str, description: &str) -> StatusParts {
        self.violation = Some((field.to_owned(), description.to_owned()));
        self
    }

    /// With a `RetryInfo` of `delay`.
    fn retry(mut self, delay: Duration) -> StatusParts {
        self.retry = Some(delay);
        self
    }
}

impl ApiError {
    /// The status of this error, one line per kind.
    fn status_parts(&self) -> StatusParts {
        use StatusParts as P;
        match self {
            ApiError::NotFound { name, cursor, .. } => P::new(
                Code::NotFound,
                "RESOURCE_NOT_FOUND",
                &[("resourceName", name), ("cursor", cursor)],
            ),
            ApiError::InvalidArgument {
                field,
                reason,
                description,
            } => P::new(Code::InvalidArgument, reason, &[("field", field)]).violation(field, description),
            ApiError::InvalidFilter { position, message } => P::new(
                Code::InvalidArgument,
                "INVALID_FILTER",
                &[("field", "filter"), ("position", &position.to_string())],
            )
            .violation("filter", message),
            ApiError::CursorExpired { oldest_cursor, .. } => {
                P::new(Code::OutOfRange, "CURSOR_EXPIRED", &[("oldestCursor", oldest_cursor)])
            }
            ApiError::FailedPrecondition { reason, .. } => P::new(Code::FailedPrecondition, reason, &[]),
            ApiError::CursorInFuture { head_cursor } => {
                P::new(Code::OutOfRange, "CURSOR_IN_FUTURE", &[("headCursor", head_cursor)])
            }
            ApiError::NotYetConsistent {
                replica_cursor,
                requested_cursor,
            } => P::new(
                Code::Unavailable,
                "NOT_YET_CONSISTENT",
                &[("replicaCursor", replica_cursor), ("requestedCursor", requested_cursor)],
            )
            .retry(Duration::from_millis(100)),
            ApiError::ConsumerTooSlow { resume_cursor } => P::new(
                Code::ResourceExhausted,
                "CONSUMER_TOO_SLOW",
                &[("resumeCursor", resume_cursor)],
            ),
            ApiError::TooManyWatchers { limit } => P::new(
                Code::ResourceExhausted,
                "TOO_MANY_WATCHERS",
                &[("limit", &limit.to_string())],
            ),
            ApiError::TooManyRequests { limit } => P::new(
                Code::ResourceExhausted,
                "TOO_MANY_REQUESTS",
                &[("limit", &limit.to_string())],
            )
            .retry(Duration::from_millis(100)),
            ApiError::RequestTooLarge { limit } => P::new(
                Code::ResourceExhausted,
                "REQUEST_TOO_LARGE",
                &[("limitBytes", &limit.to_string())],
            ),
            ApiError::IncompleteRequest { .. } => P::new(Code::InvalidArgument, "INCOMPLETE_REQUEST", &[]),
            ApiError::ShuttingDown { resume_cursor } => {
                P::new(Code::Unavailable, "SHUTTING_DOWN", &[("resumeCursor", resume_cursor)])
            }
            ApiError::Unavailable(_) => {
                P::new(Code::Unavailable, "DATABASE_UNAVAILABLE", &[]).retry(Duration::from_secs(1))
            }
            ApiError::Internal(_) => P::new(Code::Internal, "INTERNAL", &[]),
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
