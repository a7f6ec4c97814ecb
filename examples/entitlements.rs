//! entitlements: answers "which plan does this user's organization have?" (the organization's
//! `public_metadata.plan`). Read lines `USER_ID ORG_ID…` on standard input; write one JSON line
//! per organization. Memberships are asked each time (LookupMembership); plans come from a small
//! cache filled by BatchGetOrganizations and kept current by a watch on organizations.
//!
//! `cargo run --example entitlements -- --url http://127.0.0.1:50051`

// Request messages gain fields over time: `..Default::default()` keeps this compiling.
#![allow(clippy::needless_update)]

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use clap::Parser;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::{self, change::Entity, watch_changes_response::Event};
use prost_types::value::Kind;
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
}

/// Organization id → its plan (`null` when it has none) and the cursor of the state it holds.
/// Used only while the watch is up (`live`); `seen` is the last position the watch passed.
#[derive(Default)]
struct Cache {
    live: bool,
    seen: String,
    plans: HashMap<String, (Value, String)>,
}

fn plan_of(organization: &pb::Organization) -> Value {
    let plan = organization.public_metadata.as_ref().and_then(|m| m.fields.get("plan"));
    if let Some(Kind::StringValue(plan)) = plan.and_then(|v| v.kind.as_ref()) { json!(plan) } else { Value::Null }
}

/// Follows every organization change from now, updating or evicting what the cache holds.
async fn keep_warm(channel: Channel, cache: &Mutex<Cache>) -> anyhow::Result<()> {
    let entity_types = vec![pb::EntityType::Organization as i32];
    let request = pb::WatchChangesRequest { entity_types, ..Default::default() };
    let mut client = pb::watch_service_client::WatchServiceClient::new(channel);
    let mut stream = client.watch_changes(request).await?.into_inner();
    while let Some(message) = stream.message().await? {
        let mut cache = cache.lock().unwrap();
        match message.event {
            Some(Event::Heartbeat(h)) if !cache.live => {
                // A new stream: what was cached before it may have missed changes.
                *cache = Cache { live: true, seen: h.cursor.clone(), plans: HashMap::new() };
                println!("{}", json!({"watch": "live", "cursor": h.cursor}));
            }
            Some(Event::Heartbeat(h)) => cache.seen = h.cursor,
            Some(Event::Change(pb::Change { cursor, entity: Some(Entity::Organization(o)), .. })) => {
                cache.seen = cursor.clone();
                // Only what is cached, and only if the cached read is older than this change.
                let newer = cache.plans.get(&o.id).is_some_and(|(_, read)| *read < cursor);
                if newer && o.delete_time.is_some() {
                    cache.plans.remove(&o.id);
                    println!("{}", json!({"cache": "evicted", "organization": o.id}));
                } else if newer {
                    println!("{}", json!({"cache": "updated", "organization": o.id, "plan": plan_of(&o)}));
                    cache.plans.insert(o.id.clone(), (plan_of(&o), cursor));
                }
            }
            _ => {}
        }
    }
    anyhow::bail!("the server ended the stream")
}

/// One JSON answer per organization: member or not, the role, the plan, whether it was cached.
async fn answer(
    directory: &mut DirectoryServiceClient<Channel>,
    cache: &Mutex<Cache>,
    user: &str,
    organizations: &[&str],
) -> anyhow::Result<Vec<Value>> {
    // Memberships are never cached: a removed member loses the plan at once.
    let mut roles = Vec::new();
    for organization in organizations {
        let (organization, user) = (format!("organizations/{organization}"), format!("users/{user}"));
        let request = pb::LookupMembershipRequest { organization, user, ..Default::default() };
        roles.push(match directory.lookup_membership(request).await {
            Ok(response) => response.into_inner().membership.map(|m| m.role),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(status.into()),
        });
    }
    let (mut plans, mut misses) = (HashMap::new(), Vec::new());
    for (organization, _) in organizations.iter().zip(&roles).filter(|(_, role)| role.is_some()) {
        match cache.lock().unwrap().plans.get(*organization) {
            Some((plan, _)) => drop(plans.insert(organization.to_string(), (plan.clone(), true))),
            None => misses.push(format!("organizations/{organization}")),
        }
    }
    if !misses.is_empty() {
        let request = pb::BatchGetOrganizationsRequest { names: misses, show_deleted: true, ..Default::default() };
        let response = directory.batch_get_organizations(request).await?.into_inner();
        let mut cache = cache.lock().unwrap();
        // Cache the read only if the watch has not passed its position: every later change will
        // still arrive. (Otherwise a change between the read and now could be lost.)
        let cacheable = cache.live && response.cursor >= cache.seen;
        for o in response.organizations {
            if cacheable && o.delete_time.is_none() {
                cache.plans.insert(o.id.clone(), (plan_of(&o), o.update_cursor.clone()));
            }
            plans.insert(o.id.clone(), (plan_of(&o), false));
        }
    }
    let answers = organizations.iter().zip(roles).map(|(organization, role)| match role {
        None => json!({"user": user, "organization": organization, "member": false}),
        Some(role) => {
            let (plan, cached) = plans.get(*organization).cloned().unwrap_or_default();
            json!({"user": user, "organization": organization, "member": true, "role": role, "plan": plan, "cached": cached})
        }
    });
    Ok(answers.collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.url)?.connect_lazy();
    let cache = Arc::new(Mutex::new(Cache::default()));
    let (watch_channel, watch_cache) = (channel.clone(), cache.clone());
    tokio::spawn(async move {
        loop {
            let error = keep_warm(watch_channel.clone(), &watch_cache).await.unwrap_err();
            *watch_cache.lock().unwrap() = Cache::default(); // not live, nothing cached
            eprintln!("watch: {error:#}; answering without the cache, reconnecting in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut directory = DirectoryServiceClient::new(channel);
    // Standard input, read on a thread of its own (lines, in order, until it closes).
    let (lines, mut queries) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || std::io::stdin().lines().map_while(Result::ok).try_for_each(|l| lines.blocking_send(l)));
    while let Some(line) = queries.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some((user, organizations)) = words.split_first() {
            match answer(&mut directory, &cache, user, organizations).await {
                Ok(answers) => answers.iter().for_each(|answer| println!("{answer}")),
                Err(error) => println!("{}", json!({"user": user, "error": format!("{error:#}")})),
            }
        }
    }
    Ok(())
}
