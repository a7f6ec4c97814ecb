//! crm_sync: a CRM's contacts (users), accounts (organizations) and the links between them
//! (memberships), kept in a JSON file with the list-then-watch recipe, restart-safe.
//!
//! `cargo run --example crm_sync -- --url http://127.0.0.1:50051 --store crm.json`

use std::{collections::BTreeMap, io::Write, path::Path, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use clerk_mirror::pb::{self, change::Entity, watch_changes_request::Start, watch_changes_response::Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;
use tonic_types::StatusExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    url: String,
    /// The store: contacts, accounts, links and the cursor they reflect.
    #[arg(long, default_value = "crm.json")]
    store: PathBuf,
}

/// The whole store, saved in one file so that the data and its cursor never disagree.
#[derive(Default, Serialize, Deserialize)]
struct Store {
    cursor: String,
    contacts: BTreeMap<String, Record>,
    accounts: BTreeMap<String, Record>,
    links: BTreeMap<String, Record>,
}

/// A contact (`name`, `email`), an account (`name`, `slug`) or a link (`account`, `contact`, `role`).
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    fields: serde_json::Value,
    update_cursor: String,
}

impl Store {
    /// Atomically: a crash leaves the old file or the new one, never half of one.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let temp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        Ok(std::fs::rename(&temp, path)?)
    }

    /// Applies an entity's state (a tombstone removes it), unless the store already holds it at
    /// that state or a later one (it was listed after the change).
    fn apply(&mut self, entity: Entity) -> String {
        let (map, id, deleted, fields, cursor) = match entity {
            Entity::User(u) => {
                let name = format!("{} {}", u.first_name, u.last_name).trim().to_string();
                let fields = json!({"name": name, "email": u.primary_email_address});
                (&mut self.contacts, u.id, u.delete_time.is_some(), fields, u.update_cursor)
            }
            Entity::Organization(o) => {
                let fields = json!({"name": o.display_name, "slug": o.slug});
                (&mut self.accounts, o.id, o.delete_time.is_some(), fields, o.update_cursor)
            }
            Entity::Membership(m) => {
                let fields = json!({"account": m.organization_id, "contact": m.user_id, "role": m.role});
                (&mut self.links, m.id, m.delete_time.is_some(), fields, m.update_cursor)
            }
            // Kinds the CRM does not keep (a watch of every kind sends them).
            Entity::Role(r) => return format!("{} skipped", r.id),
            Entity::Permission(p) => return format!("{} skipped", p.id),
            Entity::Domain(d) => return format!("{} skipped", d.id),
            Entity::SubscriptionItem(i) => return format!("{} skipped", i.id),
            Entity::Subscription(s) => return format!("{} skipped", s.id),
            Entity::Plan(p) => return format!("{} skipped", p.id),
            Entity::PaymentAttempt(a) => return format!("{} skipped", a.id),
            Entity::Invitation(i) => return format!("{} skipped", i.id),
        };
        let outcome = match map.get(&id) {
            Some(known) if cursor <= known.update_cursor => "already up to date",
            _ if deleted => map.remove(&id).map_or("absent", |_| "removed"),
            _ => map.insert(id.clone(), Record { fields, update_cursor: cursor }).map_or("added", |_| "updated"),
        };
        format!("{id} {outcome}")
    }

    /// Adds a listed page (the store's cursor is the first page's); returns the next page's token.
    fn add_page(&mut self, cursor: String, entities: impl Iterator<Item = Entity>, next: String) -> Option<String> {
        if self.cursor.is_empty() {
            self.cursor = cursor;
        }
        entities.for_each(|entity| drop(self.apply(entity)));
        Some(next).filter(|next| !next.is_empty())
    }
}

/// Lists everything into a new store, saved. The watch starts from the FIRST page's cursor: every
/// later page, and every change, is at or after it, so nothing that happens while listing is missed.
async fn list(channel: Channel, path: &Path) -> anyhow::Result<Store> {
    let mut client = pb::directory_service_client::DirectoryServiceClient::new(channel);
    let mut store = Store::default();
    let mut next = Some(String::new());
    while let Some(page_token) = next.take() {
        let request = pb::ListUsersRequest { page_size: 1000, page_token, ..Default::default() };
        let page = client.list_users(request).await?.into_inner();
        next = store.add_page(page.cursor, page.users.into_iter().map(Entity::User), page.next_page_token);
    }
    let mut next = Some(String::new());
    while let Some(page_token) = next.take() {
        let request = pb::ListOrganizationsRequest { page_size: 1000, page_token, ..Default::default() };
        let page = client.list_organizations(request).await?.into_inner();
        next =
            store.add_page(page.cursor, page.organizations.into_iter().map(Entity::Organization), page.next_page_token);
    }
    let (parent, mut next) = ("organizations/-".to_string(), Some(String::new()));
    while let Some(page_token) = next.take() {
        let request =
            pb::ListMembershipsRequest { parent: parent.clone(), page_size: 1000, page_token, ..Default::default() };
        let page = client.list_memberships(request).await?.into_inner();
        next = store.add_page(page.cursor, page.memberships.into_iter().map(Entity::Membership), page.next_page_token);
    }
    store.save(path)?;
    let (contacts, accounts, links) = (store.contacts.len(), store.accounts.len(), store.links.len());
    println!("listed {contacts} contacts, {accounts} accounts, {links} links at {}", store.cursor);
    Ok(store)
}

/// Applies every change after the store's cursor, saving the store (and so the cursor) after each.
async fn watch(channel: Channel, store: &mut Store, path: &Path) -> anyhow::Result<()> {
    let start = Some(Start::StartCursor(store.cursor.clone()));
    let mut client = pb::watch_service_client::WatchServiceClient::new(channel);
    let mut stream = client.watch_changes(pb::WatchChangesRequest { start, ..Default::default() }).await?.into_inner();
    println!("resuming from {}", store.cursor);
    while let Some(message) = stream.message().await? {
        if let Some(Event::Change(pb::Change { cursor, entity: Some(entity), .. })) = message.event {
            let outcome = store.apply(entity); // its `update_cursor` is the change's cursor
            store.cursor = cursor;
            store.save(path)?;
            println!("{}: {outcome}", store.cursor);
        }
    }
    anyhow::bail!("the server ended the stream")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.url)?.connect_lazy();
    let mut store = match std::fs::read(&args.store) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("a corrupt store")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => list(channel.clone(), &args.store).await?,
        Err(e) => return Err(e.into()),
    };
    loop {
        let error = watch(channel.clone(), &mut store, &args.store).await.unwrap_err();
        let status = error.downcast_ref::<tonic::Status>();
        let reason = status.and_then(|s| s.get_details_error_info()).map(|i| i.reason);
        use tonic::Code::{InvalidArgument, OutOfRange, PermissionDenied, Unauthenticated};
        match (status.map(|s| s.code()), reason.as_deref()) {
            (_, Some("CURSOR_EXPIRED")) => {
                println!("cursor {} expired: listing again", store.cursor);
                store = list(channel.clone(), &args.store).await?;
            }
            // Not a gRPC error (the store file), or one that resuming cannot fix.
            (None | Some(InvalidArgument | OutOfRange | PermissionDenied | Unauthenticated), _) => return Err(error),
            _ => {
                eprintln!("{error:#}: resuming in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
