//! `clerk-mirror watch`: prints a change stream as JSON lines (canonical protobuf JSON, one
//! `WatchChangesResponse` a line, as `buf curl` shows them) and resumes from the last cursor it
//! printed after a disconnect, with jittered exponential backoff.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use rand::RngExt;
use tonic::Code;
use tonic_types::StatusExt;

use super::connect::{ANSWER_WITHIN, ConnectArgs, causes, code_and_reason, one_line};
use crate::pb;
use crate::pb::watch_changes_response::Event;
use crate::pb::watch_service_client::WatchServiceClient;

/// What to watch.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Start after this cursor.
    #[arg(long, conflicts_with_all = ["from_oldest", "initial"])]
    pub from: Option<String>,
    /// Start from the oldest retained change.
    #[arg(long, conflicts_with = "initial")]
    pub from_oldest: bool,
    /// Entity types: user, organization, membership (comma-separated).
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only this organization and its memberships.
    #[arg(long)]
    pub org: Option<String>,
    /// Only this user and their memberships.
    #[arg(long)]
    pub user: Option<String>,
    /// A filter in the lists' language.
    #[arg(long)]
    pub filter: Option<String>,
    /// First print the current state of everything selected.
    #[arg(long)]
    pub initial: bool,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 10)]
    pub heartbeat: i64,
}

fn entity_type(name: &str) -> anyhow::Result<i32> {
    Ok(match name.trim() {
        "user" | "users" => pb::EntityType::User as i32,
        "organization" | "organizations" | "org" => pb::EntityType::Organization as i32,
        "membership" | "memberships" => pb::EntityType::Membership as i32,
        other => anyhow::bail!("unknown entity type `{other}`: use user, organization or membership"),
    })
}

/// Prints the stream until interrupted; returns only on an error that resuming cannot fix.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    // A server that closes the connection while h2 writes to it (one that is not a gRPC server,
    // or one that crashed) raises SIGPIPE: hyper's vectored writes do not suppress it, and its
    // default kills the command silently instead of letting it resume. Ignored, every closed pipe
    // is an error: the server's is resumed from, standard output's ends the command quietly.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).context("the embedded descriptor set")?;
    let descriptor = pool
        .get_message_by_name("clerkmirror.v1.WatchChangesResponse")
        .context("WatchChangesResponse is not in the descriptor set")?;
    let entity_types = args
        .types
        .iter()
        .map(|t| entity_type(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoint = args.connect.endpoint()?;
    let authorization = args.connect.authorization()?;
    let mut cursor = args.from.clone();
    let mut initial_done = false;
    let mut failures = 0u32;
    let stdout = std::io::stdout();
    loop {
        let start = match (&cursor, args.from_oldest) {
            (Some(c), _) => Some(pb::watch_changes_request::Start::StartCursor(c.clone())),
            (None, true) => Some(pb::watch_changes_request::Start::StartFromOldest(true)),
            (None, false) => None,
        };
        let request = pb::WatchChangesRequest {
            send_initial_state: args.initial && cursor.is_none() && !initial_done,
            start,
            entity_types: entity_types.clone(),
            organization_id: args.org.clone().unwrap_or_default(),
            user_id: args.user.clone().unwrap_or_default(),
            filter: args.filter.clone().unwrap_or_default(),
            heartbeat_interval: Some(prost_types::Duration {
                seconds: args.heartbeat,
                nanos: 0,
            }),
        };
        let outcome = async {
            let channel = tokio::time::timeout(ANSWER_WITHIN, endpoint.connect())
                .await
                .map_err(|_| Ended::NoAnswer)?
                .map_err(Ended::Connect)?;
            let mut request = tonic::Request::new(request);
            if let Some(value) = &authorization {
                request.metadata_mut().insert("authorization", value.clone());
            }
            // A mirror answers a watch at once (its first message may come much later): a server
            // that does not (another protocol on that port) would otherwise be waited for forever.
            let mut client = WatchServiceClient::new(channel);
            let mut stream = tokio::time::timeout(ANSWER_WITHIN, client.watch_changes(request))
                .await
                .map_err(|_| Ended::NoAnswer)?
                .map_err(Ended::Refused)?
                .into_inner();
            while let Some(message) = stream.message().await.map_err(Ended::Refused)? {
                failures = 0;
                let next = match &message.event {
                    Some(Event::Change(c)) if !c.cursor.is_empty() => Some(c.cursor.clone()),
                    Some(Event::CaughtUp(c)) => {
                        initial_done = true;
                        Some(c.cursor.clone())
                    }
                    Some(Event::Heartbeat(h)) if initial_done || !args.initial || cursor.is_some() => {
                        Some(h.cursor.clone())
                    }
                    _ => None,
                };
                let line = to_json(&descriptor, &message);
                let mut out = stdout.lock();
                writeln!(out, "{line}")
                    .and_then(|()| out.flush())
                    .map_err(|_| Ended::StdoutGone)?;
                if next.is_some() {
                    cursor = next;
                }
            }
            Err::<std::convert::Infallible, _>(Ended::Closed)
        }
        .await;
        let Err(ended) = outcome;
        let problem = match ended {
            Ended::StdoutGone => return Ok(()), // e.g. `| head`
            Ended::Connect(e) => format!("cannot connect: {}", causes(&e)),
            Ended::Closed => "the server ended the stream".into(),
            Ended::NoAnswer => format!(
                "no answer within {} s (is --url the mirror's gRPC address, not its webhook port?)",
                ANSWER_WITHIN.as_secs()
            ),
            Ended::Refused(status) => {
                if let Some(refusal) = refusal(&args.connect.url, &status) {
                    anyhow::bail!(refusal);
                }
                let said = match std::error::Error::source(&status) {
                    Some(cause) => one_line([status.message().to_string(), causes(cause)]),
                    None => status.message().to_string(),
                };
                if status.get_details_error_info().is_none()
                    && matches!(status.code(), Code::Internal | Code::Unknown | Code::Cancelled)
                {
                    // Not the mirror's status (each carries an ErrorInfo): the connection's.
                    format!("the connection failed: {said} (is --url the mirror's gRPC address, not its webhook port?)")
                } else {
                    format!("the stream ended: {said} ({})", code_and_reason(&status))
                }
            }
        };
        failures += 1;
        let base = Duration::from_millis(100 * 2u64.saturating_pow(failures.min(7)));
        let delay = base
            .mul_f64(rand::rng().random_range(0.5..1.5))
            .min(Duration::from_secs(15));
        eprintln!(
            "watch: {}: {problem} — resuming from {} in {:.1} s",
            args.connect.url,
            cursor.as_deref().unwrap_or("now"),
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
}


/// How one attempt at the stream ended.
enum Ended {
    /// No connection (the server down or restarting, a wrong address, TLS refused).
    Connect(tonic::transport::Error),
    /// The server answered with a status, at once or mid-stream.
    Refused(tonic::Status),
    /// The server ended the stream without a status.
    Closed,
    /// Connected, but no answer to the watch in time.
    NoAnswer,
    /// Standard output is closed (`| head`): the end, not a failure.
    StdoutGone,
}

/// The option a request field comes from.
fn flag_of(field: &str) -> &'static str {
    match field {
        "filter" => "--filter",
        "start_cursor" => "--from",
        "entity_types" => "--type",
        "organization_id" => "--org",
        "user_id" => "--user",
        "heartbeat_interval" => "--heartbeat",
        "send_initial_state" => "--initial",
        _ => "the options",
    }
}

/// The error that ends the command when resuming cannot help (`None`: resume): what the server
/// said, and what to do.
fn refusal(url: &str, status: &tonic::Status) -> Option<String> {
    let info = status.get_details_error_info();
    let reason = info.as_ref().map(|i| i.reason.as_str()).unwrap_or_default();
    let field = info.as_ref().and_then(|i| i.metadata.get("field")).map(|f| flag_of(f));
    let what_to_do = match (status.code(), reason) {
        (Code::Unauthenticated, _) => "give a reader token: CLERK_MIRROR_TOKEN, --token-file or --token".to_string(),
        (Code::PermissionDenied, _) => "give a token of a reader or an admin".into(),
        (Code::OutOfRange, "CURSOR_EXPIRED") => {
            "start again with --initial (the current state, then its changes) or --from-oldest".into()
        }
        (Code::OutOfRange, _) => "start again without --from: the cursor is not of this server's database".into(),
        (Code::InvalidArgument, _) => format!("fix {}", field.unwrap_or("the options")),
        (Code::Unimplemented, _) => {
            "is --url the mirror's gRPC address (serve's --grpc-addr, 127.0.0.1:50051 by default)?".into()
        }
        _ => return None,
    };
    Some(format!(
        "the server at {url} refused the watch: {} ({}); {what_to_do}",
        status.message(),
        code_and_reason(status)
    ))
}

/// One message as canonical protobuf JSON.
fn to_json(descriptor: &MessageDescriptor, message: &pb::WatchChangesResponse) -> String {
    match DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice()) {
        Ok(dynamic) => serde_json::to_string(&dynamic).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        Err(e) => format!("{{\"error\":\"{e}\"}}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn endpoint_of(args: &WatchArgs) -> anyhow::Result<tonic::transport::Endpoint> {
        args.connect.endpoint()
    }

    fn authorization_of(args: &WatchArgs) -> anyhow::Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
        args.connect.authorization()
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        watch: WatchArgs,
    }

    fn args(argv: &[&str]) -> WatchArgs {
        Cli::try_parse_from(std::iter::once("watch").chain(argv.iter().copied()))
            .unwrap()
            .watch
    }

    #[test]
    fn a_refusal_ends_the_watch_with_the_servers_words_and_the_option_to_fix() {
        use crate::grpc::error::ApiError;
        let url = "http://127.0.0.1:50051";
        let says = |status: tonic::Status| refusal(url, &status).expect("a refusal");
        let expired = says(ApiError::cursor_of_another_log("c1.x".into()).into());
        assert!(
            expired.starts_with(
                "the server at http://127.0.0.1:50051 refused the watch: the cursor comes from another database"
            ),
            "{expired}"
        );
        assert!(expired.contains("(OutOfRange, CURSOR_EXPIRED)"), "{expired}");
        assert!(expired.ends_with("start again with --initial (the current state, then its changes) or --from-oldest"));
        let ahead = says(
            ApiError::CursorInFuture {
                head_cursor: "c1.x".into(),
            }
            .into(),
        );
        assert!(
            ahead.ends_with("start again without --from: the cursor is not of this server's database"),
            "{ahead}"
        );
        let filter = says(
            ApiError::InvalidFilter {
                position: 3,
                message: "no field `nope`".into(),
            }
            .into(),
        );
        assert!(
            filter.contains("no field `nope`") && filter.ends_with("fix --filter"),
            "{filter}"
        );
        let org = says(ApiError::invalid("organization_id", "INVALID_ID", "not a Clerk id").into());
        assert!(org.ends_with("(InvalidArgument, INVALID_ID); fix --org"), "{org}");
        let token = says(tonic::Status::unauthenticated("a valid bearer token is required"));
        assert!(
            token.contains("a valid bearer token is required (Unauthenticated); give a reader token"),
            "{token}"
        );
        let other = says(tonic::Status::unimplemented(""));
        assert!(other.contains("is --url the mirror's gRPC address"), "{other}");
        // What resuming can fix is no refusal.
        assert!(
            refusal(
                url,
                &ApiError::ShuttingDown {
                    resume_cursor: "c1.x".into()
                }
                .into()
            )
            .is_none()
        );
        assert!(refusal(url, &tonic::Status::unavailable("connection reset")).is_none());
    }

    #[test]
    fn an_errors_causes_read_as_one_line_each_text_once() {
        assert_eq!(
            one_line([
                "h2 protocol error: http2 error".to_string(),
                "http2 error: connection error detected: frame with invalid size".to_string()
            ]),
            "h2 protocol error: http2 error: connection error detected: frame with invalid size"
        );
        assert_eq!(
            one_line([
                "transport error".to_string(),
                "tcp connect error".to_string(),
                "tcp connect error".to_string()
            ]),
            "tcp connect error"
        );
    }

    #[test]
    fn tls_options_must_match_the_url_scheme() {
        let https = endpoint_of(&args(&["--url", "https://localhost:50051"])).unwrap_err();
        assert!(format!("{https:#}").contains("needs --ca"), "{https:#}");
        let http = endpoint_of(&args(&["--url", "http://localhost:50051", "--ca", "ca.pem"])).unwrap_err();
        assert!(format!("{http:#}").contains("for an https:// URL"), "{http:#}");
        let bare = endpoint_of(&args(&["--url", "localhost:50051"])).unwrap_err();
        assert!(
            format!("{bare:#}")
                .contains("--url `localhost:50051` is not an http:// or https:// URL; write it as http://"),
            "{bare:#}"
        );
        let unreadable = endpoint_of(&args(&[
            "--url",
            "https://localhost:50051",
            "--ca",
            "/nonexistent/ca.pem",
        ]))
        .unwrap_err();
        assert!(
            format!("{unreadable:#}").starts_with("cannot read --ca /nonexistent/ca.pem: "),
            "{unreadable:#}"
        );
        assert!(
            Cli::try_parse_from(["watch", "--cert", "c.pem"]).is_err(),
            "--cert without --key"
        );
        assert!(endpoint_of(&args(&["--url", "http://localhost:50051"])).is_ok());
    }

    #[test]
    fn a_token_file_gives_its_first_non_empty_line_and_a_token_never_shows_in_debug() {
        let path = std::env::temp_dir().join(format!("clerk-mirror-token-{}", std::process::id()));
        std::fs::write(&path, "\n   tok-0123456789abcdef  \nignored\n").unwrap();
        let value = authorization_of(&args(&["--token-file", path.to_str().unwrap()]))
            .unwrap()
            .unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer tok-0123456789abcdef");
        std::fs::remove_file(&path).unwrap();
        let with_token = args(&["--token", "tok-0123456789abcdef"]);
        assert!(!format!("{with_token:?}").contains("tok-0123"));
        assert!(authorization_of(&args(&[])).unwrap().is_none());
    }
}
