//! `clerk-mirror destinations add|list|show|pause|resume|reset|rotate-secret|remove`: outbound
//! webhook destinations managed through a running server's AdminService (an admin token where
//! the server has tokens). Each prints the destination as canonical protobuf JSON, one a line;
//! `add` and `rotate-secret` show the signing secret, once.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::Code;
use tonic_types::StatusExt;

use super::connect::{ConnectArgs, code_and_reason};
use crate::config::HumanDuration;
use crate::pb;
use crate::pb::admin_service_client::AdminServiceClient;

#[derive(Args, Debug)]
pub(super) struct DestinationsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: DestinationCommand,
}

#[derive(Subcommand, Debug)]
enum DestinationCommand {
    /// Deliver changes (and raw Clerk events) to a URL; prints the destination with its signing
    /// secret (shown this once).
    Add(AddArgs),
    /// Every destination, one JSON line each.
    List,
    /// One destination (cursor, lag, last answer), and with --attempts its recent attempts.
    Show {
        /// `dst_…` or `destinations/dst_…`.
        name: String,
        /// Also print this many recent attempts, newest first.
        #[arg(long, default_value_t = 0)]
        attempts: i32,
    },
    /// Stop deliveries; the cursor stays.
    Pause {
        name: String,
        /// Why (shown as the destination's paused_reason).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume deliveries where they stopped.
    Resume { name: String },
    /// Move the cursor: to a cursor, to the oldest retained change, or to the head.
    Reset {
        name: String,
        /// Deliver what follows this cursor.
        #[arg(long, conflicts_with_all = ["from_oldest", "to_head"], required_unless_present_any = ["from_oldest", "to_head"])]
        to: Option<String>,
        /// Deliver from the oldest retained change.
        #[arg(long, conflicts_with = "to_head")]
        from_oldest: bool,
        /// Skip the backlog: deliver only what comes next.
        #[arg(long)]
        to_head: bool,
    },
    /// Make a new signing secret (printed once); the old one also signs for --transition.
    RotateSecret {
        name: String,
        /// How long the old secret keeps signing (0s: not at all).
        #[arg(long, default_value = "24h")]
        transition: HumanDuration,
    },
    /// Delete a destination; nothing more is sent to it.
    Remove { name: String },
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Where to POST deliveries (https; http only to a private address the server allows).
    #[arg(long = "to")]
    url: String,
    /// Entity types to send changes of (comma-separated): user, organization, membership, role,
    /// permission, invitation, domain, subscription_item, subscription, plan, payment_attempt.
    /// None: every type, unless --event-type is given.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Only changes matching this filter (the lists' language).
    #[arg(long, default_value = "")]
    filter: String,
    /// Raw Clerk event types to send as received (e.g. session.created, session.*); repeat.
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Send only these entity fields (proto names; name and id always); repeat. None: every
    /// field but private_metadata.
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Deliveries in flight at once; above 1, ordered per entity only.
    #[arg(long, default_value_t = 1)]
    lanes: i32,
    /// Most changes sent together in one delivery (a `clerkmirror.batch`).
    #[arg(long, default_value_t = 1)]
    batch_size: i32,
    /// Start after this cursor (e.g. a list's cursor: list, then forward).
    #[arg(long, conflicts_with = "from_oldest")]
    from: Option<String>,
    /// Start from the oldest retained change.
    #[arg(long)]
    from_oldest: bool,
}

/// `user` → `ENTITY_TYPE_USER`.
fn entity_type(name: &str) -> anyhow::Result<i32> {
    let wire = format!("ENTITY_TYPE_{}", name.trim().trim_end_matches('s').to_ascii_uppercase());
    pb::EntityType::from_str_name(&wire)
        .filter(|t| *t != pb::EntityType::Unspecified)
        .map(|t| t as i32)
        .with_context(|| format!("unknown entity type `{name}` (--type): e.g. user, organization, membership"))
}

fn name_of(name: &str) -> String {
    match name.starts_with("destinations/") {
        true => name.to_string(),
        false => format!("destinations/{name}"),
    }
}

/// A message as canonical protobuf JSON.
fn json<M: Message>(full_name: &str, message: &M) -> anyhow::Result<String> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).context("the embedded descriptor set")?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .with_context(|| format!("{full_name} is not in the descriptor set"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    Ok(serde_json::to_string(&dynamic)?)
}

fn print_destination(d: Option<pb::Destination>) -> anyhow::Result<()> {
    let d = d.context("the server answered without a destination")?;
    println!("{}", json("clerkmirror.v1.Destination", &d)?);
    Ok(())
}

/// What to do about a refused call.
fn refused(url: &str, what: &str, status: &tonic::Status) -> anyhow::Error {
    let what_to_do = match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            "give an admin token: CLERK_MIRROR_TOKEN, --token-file or --token".to_string()
        }
        Code::NotFound => "`destinations list` shows the destinations".into(),
        Code::InvalidArgument => {
            let field = status
                .get_details_error_info()
                .and_then(|i| i.metadata.get("field").cloned())
                .unwrap_or_default();
            format!("fix {}", if field.is_empty() { "the options".into() } else { format!("`{field}`") })
        }
        Code::FailedPrecondition => "see above".into(),
        Code::Unavailable => "is the server running at --url (serve's --grpc-addr)?".into(),
        Code::Unimplemented => "is --url the mirror's gRPC address (127.0.0.1:50051 by default)?".into(),
        _ => "retry; the server's log says more".into(),
    };
    anyhow::anyhow!(
        "the server at {url} refused to {what}: {} ({}); {what_to_do}",
        status.message(),
        code_and_reason(status)
    )
}

pub(super) async fn run(args: DestinationsArgs) -> anyhow::Result<()> {
    let url = args.connect.url.clone();
    let endpoint = args.connect.endpoint()?;
    let authorization = args.connect.authorization()?;
    let channel = tokio::time::timeout(Duration::from_secs(10), endpoint.connect())
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 10 s: is it the mirror's gRPC address?"))?
        .with_context(|| format!("cannot connect to {url}: is the server running (serve's --grpc-addr)?"))?;
    let mut client = AdminServiceClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        if let Some(value) = &authorization {
            r.metadata_mut().insert("authorization", value.clone());
        }
        Ok(r)
    });
    match args.command {
        DestinationCommand::Add(a) => {
            let destination = pb::Destination {
                url: a.url,
                entity_types: a.types.iter().map(|t| entity_type(t)).collect::<anyhow::Result<_>>()?,
                filter: a.filter,
                event_types: a.event_types,
                field_mask: (!a.fields.is_empty()).then_some(prost_types::FieldMask { paths: a.fields }),
                lanes: a.lanes,
                batch_size: a.batch_size,
                start_cursor: a.from.unwrap_or_default(),
                start_from_oldest: a.from_oldest,
                ..Default::default()
            };
            let made = client
                .create_destination(pb::CreateDestinationRequest {
                    destination: Some(destination),
                })
                .await
                .map_err(|s| refused(&url, "add the destination", &s))?
                .into_inner();
            eprintln!("keep the secret (`secret`): it is shown this once; verify deliveries with it");
            print_destination(made.destination)
        }
        DestinationCommand::List => {
            let mut token = String::new();
            loop {
                let page = client
                    .list_destinations(pb::ListDestinationsRequest {
                        page_size: 1000,
                        page_token: token,
                    })
                    .await
                    .map_err(|s| refused(&url, "list destinations", &s))?
                    .into_inner();
                for d in page.destinations {
                    print_destination(Some(d))?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
        DestinationCommand::Show { name, attempts } => {
            let d = client
                .get_destination(pb::GetDestinationRequest { name: name_of(&name) })
                .await
                .map_err(|s| refused(&url, "show the destination", &s))?
                .into_inner();
            print_destination(d.destination)?;
            if attempts > 0 {
                let list = client
                    .list_delivery_attempts(pb::ListDeliveryAttemptsRequest {
                        name: name_of(&name),
                        page_size: attempts,
                        page_token: String::new(),
                    })
                    .await
                    .map_err(|s| refused(&url, "list the attempts", &s))?
                    .into_inner();
                for a in list.attempts {
                    println!("{}", json("clerkmirror.v1.DeliveryAttempt", &a)?);
                }
            }
            Ok(())
        }
        DestinationCommand::Pause { name, reason } => {
            let d = client
                .pause_destination(pb::PauseDestinationRequest { name: name_of(&name), reason })
                .await
                .map_err(|s| refused(&url, "pause the destination", &s))?;
            print_destination(d.into_inner().destination)
        }
        DestinationCommand::Resume { name } => {
            let d = client
                .resume_destination(pb::ResumeDestinationRequest { name: name_of(&name) })
                .await
                .map_err(|s| refused(&url, "resume the destination", &s))?;
            print_destination(d.into_inner().destination)
        }
        DestinationCommand::Reset {
            name,
            to,
            from_oldest,
            to_head,
        } => {
            let d = client
                .reset_destination(pb::ResetDestinationRequest {
                    name: name_of(&name),
                    cursor: to.unwrap_or_default(),
                    from_oldest,
                    to_head,
                })
                .await
                .map_err(|s| refused(&url, "reset the destination", &s))?;
            print_destination(d.into_inner().destination)
        }
        DestinationCommand::RotateSecret { name, transition } => {
            let d = client
                .rotate_destination_secret(pb::RotateDestinationSecretRequest {
                    name: name_of(&name),
                    transition: Some(prost_types::Duration {
                        seconds: transition.0.as_secs() as i64,
                        nanos: transition.0.subsec_nanos() as i32,
                    }),
                })
                .await
                .map_err(|s| refused(&url, "rotate the secret", &s))?;
            eprintln!("keep the new secret (`secret`): it is shown this once");
            print_destination(d.into_inner().destination)
        }
        DestinationCommand::Remove { name } => {
            client
                .delete_destination(pb::DeleteDestinationRequest { name: name_of(&name) })
                .await
                .map_err(|s| refused(&url, "remove the destination", &s))?;
            println!("removed {}", name_of(&name));
            Ok(())
        }
    }
}
