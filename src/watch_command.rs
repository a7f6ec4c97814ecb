//! `clerk-mirror watch`: prints a change stream as JSON lines (canonical protobuf JSON, one
//! `WatchChangesResponse` a line, as `buf curl` shows them) and resumes from the last cursor it
//! printed after a disconnect, with jittered exponential backoff.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use rand::RngExt;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

use crate::pb;
use crate::pb::watch_changes_response::Event;
use crate::pb::watch_service_client::WatchServiceClient;

/// What to watch.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// The server's gRPC address.
    #[arg(long, env = "CLERK_MIRROR_GRPC_URL", default_value = "http://127.0.0.1:50051")]
    pub url: String,
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
    /// A bearer token for a server started with tokens (prefer the environment variable, or
    /// `--token-file`: a command line is visible to other users of the machine).
    #[arg(long, env = "CLERK_MIRROR_TOKEN", hide_env_values = true, conflicts_with = "token_file", value_parser = crate::cli::secret)]
    pub token: Option<crate::config::Redacted<String>>,
    /// A file holding the bearer token (its first non-empty line).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// For an `https://` URL: the CA certificate (PEM) the server's certificate is signed by.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for a server that requires one (mTLS); with `--key`.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

/// The connection `args` ask for: plain or TLS (`--ca`, `--cert`/`--key`) to `--url`.
fn endpoint(args: &WatchArgs) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(args.url.clone()).with_context(|| format!("invalid --url `{}`", args.url))?;
    let read = |path: &PathBuf| std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    if !args.url.starts_with("https://") {
        anyhow::ensure!(
            args.ca.is_none() && args.cert.is_none(),
            "--ca, --cert and --key are for an https:// URL"
        );
        return Ok(endpoint);
    }
    let ca = args
        .ca
        .as_ref()
        .context("an https:// URL needs --ca (the server's CA certificate, PEM)")?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    endpoint.tls_config(tls).context("the TLS settings")
}

/// The `authorization` header for `--token` or `--token-file`, if either is given.
fn authorization(args: &WatchArgs) -> anyhow::Result<Option<MetadataValue<Ascii>>> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.0.trim().to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .with_context(|| format!("{} holds no token", path.display()))?
            .to_string(),
        (None, None) => return Ok(None),
    };
    let value = MetadataValue::try_from(format!("Bearer {token}")).context("the token is not printable ASCII")?;
    Ok(Some(value))
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
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).context("the embedded descriptor set")?;
    let descriptor = pool
        .get_message_by_name("clerkmirror.v1.WatchChangesResponse")
        .context("WatchChangesResponse is not in the descriptor set")?;
    let entity_types = args
        .types
        .iter()
        .map(|t| entity_type(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let endpoint = endpoint(&args)?;
    let authorization = authorization(&args)?;
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
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            let mut request = tonic::Request::new(request);
            if let Some(value) = &authorization {
                request.metadata_mut().insert("authorization", value.clone());
            }
            let mut stream = WatchServiceClient::new(channel)
                .watch_changes(request)
                .await?
                .into_inner();
            while let Some(message) = stream.message().await? {
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
                    .map_err(|e| tonic::Status::aborted(e.to_string()))?;
                if next.is_some() {
                    cursor = next;
                }
            }
            Err::<std::convert::Infallible, _>(tonic::Status::unavailable("the server ended the stream"))
        }
        .await;
        let Err(status) = outcome;
        let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
        match (status.code(), reason.as_str()) {
            (Code::Aborted, _) => return Ok(()), // stdout closed (e.g. `| head`)
            (Code::OutOfRange | Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied, _) => {
                anyhow::bail!("{} ({reason})", status.message());
            }
            _ => {}
        }
        failures += 1;
        let base = Duration::from_millis(100 * 2u64.saturating_pow(failures.min(7)));
        let delay = base
            .mul_f64(rand::rng().random_range(0.5..1.5))
            .min(Duration::from_secs(15));
        eprintln!(
            "watch: {} — resuming from {} in {:.1} s",
            status.message(),
            cursor.as_deref().unwrap_or("now"),
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
    }
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
    fn tls_options_must_match_the_url_scheme() {
        let https = endpoint(&args(&["--url", "https://localhost:50051"])).unwrap_err();
        assert!(format!("{https:#}").contains("needs --ca"), "{https:#}");
        let http = endpoint(&args(&["--url", "http://localhost:50051", "--ca", "ca.pem"])).unwrap_err();
        assert!(format!("{http:#}").contains("for an https:// URL"), "{http:#}");
        assert!(
            Cli::try_parse_from(["watch", "--cert", "c.pem"]).is_err(),
            "--cert without --key"
        );
        assert!(endpoint(&args(&["--url", "http://localhost:50051"])).is_ok());
    }

    #[test]
    fn a_token_file_gives_its_first_non_empty_line_and_a_token_never_shows_in_debug() {
        let path = std::env::temp_dir().join(format!("clerk-mirror-token-{}", std::process::id()));
        std::fs::write(&path, "\n   tok-0123456789abcdef  \nignored\n").unwrap();
        let value = authorization(&args(&["--token-file", path.to_str().unwrap()]))
            .unwrap()
            .unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer tok-0123456789abcdef");
        std::fs::remove_file(&path).unwrap();
        let with_token = args(&["--token", "tok-0123456789abcdef"]);
        assert!(!format!("{with_token:?}").contains("tok-0123"));
        assert!(authorization(&args(&[])).unwrap().is_none());
    }
}
