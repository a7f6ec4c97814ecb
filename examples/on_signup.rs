//! on_signup: maps watched changes to actions (what Knock workflows or Inngest functions do on
//! `user.created`). Each rule has its own watch and cursor; an action is retried with capped
//! exponential backoff until it succeeds, and a change is recorded as done only after it.
//!
//! `cargo run --example on_signup -- --url http://127.0.0.1:50051 --config rules.json --state on_signup.json`

use std::{collections::BTreeMap, io::Write, path::PathBuf, sync::Arc, sync::Mutex, time::Duration};

use anyhow::Context;
use clap::Parser;
use clerk_mirror::pb::{self, change::Entity, watch_changes_request::Start, watch_changes_response::Event};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
    /// `{"rules": [Rule, …]}`.
    #[arg(long)]
    config: PathBuf,
    /// Each rule's cursor: the last change it finished.
    #[arg(long, default_value = "on_signup.json")]
    state: PathBuf,
}

#[derive(Deserialize)]
struct Config {
    rules: Vec<Rule>,
}

/// When (`types`, `filter`: the watch; `operations`), what (`fields`: body key → field path of the
/// entity, e.g. `public_metadata.plan`) and where (`post` to a URL; without it, print).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Rule {
    name: String,
    types: Vec<String>,
    filter: String,
    operations: Vec<String>,
    fields: BTreeMap<String, String>,
    post: Option<String>,
}

struct Shared {
    /// Rule name → the cursor of the last change it finished.
    state: Mutex<BTreeMap<String, String>>,
    path: PathBuf,
    http: Client<HttpConnector, String>,
    descriptors: DescriptorPool,
}

impl Shared {
    /// Records that `rule` is done with everything up to `cursor`, atomically (temp file + rename).
    fn record(&self, rule: &str, cursor: &str) -> anyhow::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.insert(rule.to_string(), cursor.to_string());
        let temp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(&*state)?)?;
        file.sync_all()?;
        Ok(std::fs::rename(&temp, &self.path)?)
    }

    /// The rule's body: its field paths looked up in the entity as JSON with the proto's field names
    /// (those the filter language uses), `null` where there is nothing.
    fn body(&self, rule: &Rule, entity: &Entity) -> anyhow::Result<Value> {
        let (name, bytes) = match entity {
            Entity::User(u) => ("clerkmirror.v1.User", u.encode_to_vec()),
            Entity::Organization(o) => ("clerkmirror.v1.Organization", o.encode_to_vec()),
            Entity::Membership(m) => ("clerkmirror.v1.Membership", m.encode_to_vec()),
            Entity::Role(r) => ("clerkmirror.v1.Role", r.encode_to_vec()),
            Entity::Permission(p) => ("clerkmirror.v1.Permission", p.encode_to_vec()),
            Entity::Domain(d) => ("clerkmirror.v1.Domain", d.encode_to_vec()),
            Entity::SubscriptionItem(i) => ("clerkmirror.v1.SubscriptionItem", i.encode_to_vec()),
            Entity::Subscription(s) => ("clerkmirror.v1.Subscription", s.encode_to_vec()),
            Entity::Plan(p) => ("clerkmirror.v1.Plan", p.encode_to_vec()),
            Entity::PaymentAttempt(a) => ("clerkmirror.v1.PaymentAttempt", a.encode_to_vec()),
            Entity::Invitation(i) => ("clerkmirror.v1.Invitation", i.encode_to_vec()),
        };
        let descriptor = self.descriptors.get_message_by_name(name).context("no descriptor")?;
        let message = DynamicMessage::decode(descriptor, bytes.as_slice())?;
        let options = SerializeOptions::new().use_proto_field_name(true);
        let entity = message.serialize_with_options(serde_json::value::Serializer, &options)?;
        let field = |path: &String| path.split('.').try_fold(&entity, |v, k| v.get(k)).cloned().unwrap_or(Value::Null);
        Ok(rule.fields.iter().map(|(key, path)| (key.clone(), field(path))).collect())
    }

    /// Runs the action once; `key` lets the receiver drop a repeat (after a crash between the
    /// action and `record`).
    async fn perform(&self, rule: &Rule, key: &str, body: &Value) -> anyhow::Result<()> {
        let Some(url) = &rule.post else {
            println!("{}", json!({"rule": rule.name, "key": key, "body": body}));
            return Ok(());
        };
        let request = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request)).await??;
        anyhow::ensure!(response.status().is_success(), "{url} answered {}", response.status());
        Ok(())
    }
}

/// Follows one rule's watch from its cursor (none yet: from now).
async fn follow(shared: &Shared, rule: &Rule, channel: Channel) -> anyhow::Result<()> {
    let cursor = shared.state.lock().unwrap().get(&rule.name).cloned();
    let types = rule.types.iter().map(|t| pb::EntityType::from_str_name(&format!("ENTITY_TYPE_{}", t.to_uppercase())));
    let request = pb::WatchChangesRequest {
        start: cursor.clone().map(Start::StartCursor),
        entity_types: types.map(|t| t.map(|t| t as i32).context("unknown type")).collect::<anyhow::Result<_>>()?,
        filter: rule.filter.clone(),
        ..Default::default()
    };
    let mut client = pb::watch_service_client::WatchServiceClient::new(channel);
    let mut stream = client.watch_changes(request).await?.into_inner();
    // The stream starts with a heartbeat at its start position: a first run records it, so that a
    // restart before any change misses nothing.
    let Some(Event::Heartbeat(start)) = stream.message().await?.and_then(|m| m.event) else {
        anyhow::bail!("the stream did not start with a heartbeat");
    };
    if cursor.is_none() {
        shared.record(&rule.name, &start.cursor)?;
    }
    println!("{}: watching from {}", rule.name, start.cursor);
    while let Some(message) = stream.message().await? {
        let Some(Event::Change(change)) = message.event else {
            continue;
        };
        let operation = pb::Operation::try_from(change.operation).map(|o| o.as_str_name()).unwrap_or_default();
        let wanted = rule.operations.is_empty()
            || rule.operations.iter().any(|o| operation == format!("OPERATION_{}", o.to_uppercase()));
        // `left_filter`: the entity matched before, not now (the rule is about the new state).
        if let (true, false, Some(entity)) = (wanted, change.left_filter, &change.entity) {
            let (key, body) = (format!("{}/{}", rule.name, change.cursor), shared.body(rule, entity)?);
            let mut delay = Duration::from_millis(100);
            while let Err(e) = shared.perform(rule, &key, &body).await {
                eprintln!("{key}: {e:#}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        shared.record(&rule.name, &change.cursor)?;
    }
    anyhow::bail!("the server ended the stream")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: Config = serde_json::from_slice(&std::fs::read(&args.config)?).context("the config")?;
    let state = match std::fs::read(&args.state) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("the state file")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e.into()),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        path: args.state,
        http: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        descriptors: DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)?,
    });
    let channel = Channel::from_shared(args.url)?.connect_lazy();
    let mut rules = tokio::task::JoinSet::new();
    for rule in config.rules {
        let (shared, channel) = (shared.clone(), channel.clone());
        rules.spawn(async move {
            loop {
                let error = follow(&shared, &rule, channel.clone()).await.unwrap_err();
                // Not a gRPC error (the state file), or one that resuming cannot fix.
                use tonic::Code::{InvalidArgument, OutOfRange, PermissionDenied, Unauthenticated};
                let code = error.downcast_ref::<tonic::Status>().map(|s| s.code());
                if let None | Some(InvalidArgument | OutOfRange | PermissionDenied | Unauthenticated) = code {
                    return Err(error.context(rule.name));
                }
                eprintln!("{}: {error:#}; resuming in 1 s", rule.name);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    // A rule that fails for good (a bad filter, an expired cursor, its state file) stops the program.
    rules.join_next().await.context("no rules")??
}
