//! entitlements: answers "which plan does this user's organization have, and which features?"
//! from Clerk Billing as the mirror holds it. Read lines `USER_ID ORG_ID…` on standard input;
//! write one JSON line per organization. Memberships are asked each time (LookupMembership); the
//! organization's features come from one CheckEntitlements per organization (every feature any
//! plan lists); plans (slug, features) come from a small cache filled by ListPlans and kept
//! current by a watch on plans.
//!
//! `cargo run --example entitlements -- --url http://127.0.0.1:50051`

// Request messages gain fields over time: `..Default::default()` keeps this compiling.
#![allow(clippy::needless_update)]

use std::collections::{BTreeSet, HashMap};
use std::{sync::Arc, sync::Mutex, time::Duration};

use clap::Parser;
use clerk_mirror::pb::billing_service_client::BillingServiceClient;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::{self, change::Entity, watch_changes_response::Event};
use serde_json::{Value, json};
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
}

/// Plan name (`plans/{id}`) → the plan. Used only while the watch is up (`live`).
#[derive(Default)]
struct Cache {
    live: bool,
    plans: HashMap<String, pb::Plan>,
}

impl Cache {
    /// Every feature any plan lists, in order.
    fn features(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.plans.values().flat_map(|p| &p.features).collect();
        all.into_iter().cloned().collect()
    }
}

/// Every plan, by name, and the cursor of the last page.
async fn list_plans(billing: &mut BillingServiceClient<Channel>) -> anyhow::Result<(HashMap<String, pb::Plan>, String)> {
    let (mut plans, mut page_token) = (HashMap::new(), String::new());
    loop {
        let request = pb::ListPlansRequest { page_token, ..Default::default() };
        let page = billing.list_plans(request).await?.into_inner();
        plans.extend(page.plans.into_iter().map(|p| (p.name.clone(), p)));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok((plans, page.cursor));
        }
    }
}

/// Lists every plan, then follows every plan change from the list's cursor.
async fn keep_warm(channel: Channel, cache: &Mutex<Cache>) -> anyhow::Result<()> {
    let (plans, cursor) = list_plans(&mut BillingServiceClient::new(channel.clone())).await?;
    let entity_types = vec![pb::EntityType::Plan as i32];
    let start = Some(pb::watch_changes_request::Start::StartCursor(cursor.clone()));
    let request = pb::WatchChangesRequest { entity_types, start, ..Default::default() };
    let mut client = pb::watch_service_client::WatchServiceClient::new(channel);
    let mut stream = client.watch_changes(request).await?.into_inner();
    *cache.lock().unwrap() = Cache { live: true, plans };
    println!("{}", json!({"watch": "live", "cursor": cursor}));
    while let Some(message) = stream.message().await? {
        if let Some(Event::Change(pb::Change { entity: Some(Entity::Plan(plan)), .. })) = message.event {
            println!("{}", json!({"cache": "updated", "plan": plan.slug, "features": plan.features}));
            cache.lock().unwrap().plans.insert(plan.name.clone(), plan);
        }
    }
    anyhow::bail!("the server ended the stream")
}

/// One JSON answer per organization: member or not, the role, the plan and its features.
async fn answer(
    channel: &Channel,
    cache: &Mutex<Cache>,
    user: &str,
    organizations: &[&str],
) -> anyhow::Result<Vec<Value>> {
    let (mut directory, mut billing) = (DirectoryServiceClient::new(channel.clone()), BillingServiceClient::new(channel.clone()));
    let mut answers = Vec::new();
    for organization in organizations {
        // Memberships are never cached: a removed member loses the plan at once.
        let request = pb::LookupMembershipRequest {
            organization: format!("organizations/{organization}"),
            user: format!("users/{user}"),
            ..Default::default()
        };
        let role = match directory.lookup_membership(request).await {
            Ok(response) => response.into_inner().membership.map(|m| m.role),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(status.into()),
        };
        let Some(role) = role else {
            answers.push(json!({"user": user, "organization": organization, "member": false}));
            continue;
        };
        // Without the watch, the plans are listed for this answer (and not cached).
        let live = cache.lock().unwrap().live;
        let uncached = match live {
            true => None,
            false => Some(Cache { live: false, plans: list_plans(&mut billing).await?.0 }),
        };
        // Whether the organization has each feature any plan lists, at one snapshot.
        let features = match &uncached {
            Some(plans) => plans.features(),
            None => cache.lock().unwrap().features(),
        };
        let payer = format!("organizations/{organization}");
        let checks = features
            .iter()
            .map(|f| pb::EntitlementCheck { payer: payer.clone(), feature: f.clone(), ..Default::default() })
            .collect::<Vec<_>>();
        let results = match checks.is_empty() {
            true => Vec::new(),
            false => billing.check_entitlements(pb::CheckEntitlementsRequest { checks, ..Default::default() }).await?.into_inner().results,
        };
        let entitled: Vec<&String> = features.iter().zip(&results).filter(|(_, r)| r.entitled).map(|(f, _)| f).collect();
        // The plan that grants them (the item's, or the default plan), by name.
        let plan_name = results.iter().find(|r| r.entitled).map(|r| r.plan.clone());
        let cached = plan_name.as_ref().and_then(|n| match &uncached {
            Some(plans) => plans.plans.get(n).map(|p| p.slug.clone()),
            None => cache.lock().unwrap().plans.get(n).map(|p| p.slug.clone()),
        });
        let plan = match (&plan_name, cached.clone()) {
            (None, _) => Value::Null,
            (Some(_), Some(slug)) => json!(slug),
            (Some(name), None) => {
                let plan = billing.get_plan(pb::GetPlanRequest { name: name.clone(), ..Default::default() }).await?.into_inner().plan;
                json!(plan.map(|p| p.slug))
            }
        };
        let cached = uncached.is_none() && (plan_name.is_none() || cached.is_some());
        answers.push(json!({"user": user, "organization": organization, "member": true, "role": role,
                            "plan": plan, "features": entitled, "cached": cached}));
    }
    Ok(answers)
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
    // Standard input, read on a thread of its own (lines, in order, until it closes).
    let (lines, mut queries) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || std::io::stdin().lines().map_while(Result::ok).try_for_each(|l| lines.blocking_send(l)));
    while let Some(line) = queries.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some((user, organizations)) = words.split_first() {
            match answer(&channel, &cache, user, organizations).await {
                Ok(answers) => answers.iter().for_each(|answer| println!("{answer}")),
                Err(error) => println!("{}", json!({"user": user, "error": format!("{error:#}")})),
            }
        }
    }
    Ok(())
}
