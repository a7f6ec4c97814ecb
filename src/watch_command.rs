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
            let mut client = WatchServiceClient::connect(args.url.clone())
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut stream = client.watch_changes(request).await?.into_inner();
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
            (Code::OutOfRange, _) | (Code::InvalidArgument, _) => {
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
