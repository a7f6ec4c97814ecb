//! crm_sync: a CRM's contacts (users), accounts (organizations) and the links between them
//! (memberships), kept in a JSON file with the list-then-watch recipe, restart-safe.
//!
//! `cargo run --example crm_sync -- --url http://127.0.0.1:50051 --store crm.json`

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use clerk_mirror::pb::{self, change::Entity, watch_changes_request::Start, watch_changes_response::Event};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;
use tonic_types::StatusExt;

#[derive(Parser)]
struct Args {
    /// The mirror's gRPC address.
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
    fn load(path: &Path) -> anyhow::Result<Option<Store>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).context("a corrupt store")?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Atomically: a crash leaves the old file or the new one, never half of one.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let temp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        Ok(())
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
        };
        match map.get(&id) {
            Some(known) if cursor <= known.update_cursor => format!("{id} already up to date"),
            _ if deleted => map.remove(&id).map_or(format!("{id} absent"), |_| format!("{id} removed")),
            _ => {
                map.insert(id.clone(), Record { fields, update_cursor: cursor });
                format!("{id} saved")
            }
        }
    }
}

/// Lists everything. The watch starts from the FIRST page's cursor: every later page, and every
/// change, is at or after it, so nothing that happens while listing is missed.
async fn list(channel: Channel) -> anyhow::Result<Store> {
    let mut client = DirectoryServiceClient::new(channel);
    let mut store = Store::default();
    for kind in ["users", "organizations", "memberships"] {
        let mut page_token = String::new();
        loop {
            let (cursor, entities, next_page_token): (_, Vec<Entity>, _) = match kind {
                "users" => {
                    let request = pb::ListUsersRequest { page_size: 1000, page_token, ..Default::default() };
                    let page = client.list_users(request).await?.into_inner();
                    (page.cursor, page.users.into_iter().map(Entity::User).collect(), page.next_page_token)
                }
                "organizations" => {
                    let request = pb::ListOrganizationsRequest { page_size: 1000, page_token, ..Default::default() };
                    let page = client.list_organizations(request).await?.into_inner();
                    let organizations = page.organizations.into_iter().map(Entity::Organization).collect();
                    (page.cursor, organizations, page.next_page_token)
                }
                _ => {
                    let parent = "organizations/-".to_string();
                    let request =
                        pb::ListMembershipsRequest { parent, page_size: 1000, page_token, ..Default::default() };
                    let page = client.list_memberships(request).await?.into_inner();
                    let memberships = page.memberships.into_iter().map(Entity::Membership).collect();
                    (page.cursor, memberships, page.next_page_token)
                }
            };
            if store.cursor.is_empty() {
                store.cursor = cursor;
            }
            entities.into_iter().for_each(|entity| drop(store.apply(entity)));
            page_token = next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
    }
    Ok(store)
}

/// Applies every change after the store's cursor, saving the store (and so the cursor) after each.
async fn watch(channel: Channel, store: &mut Store, path: &Path) -> anyhow::Result<()> {
    let start = Some(Start::StartCursor(store.cursor.clone()));
    let request = pb::WatchChangesRequest { start, ..Default::default() };
    let mut stream = WatchServiceClient::new(channel).watch_changes(request).await?.into_inner();
    while let Some(message) = stream.message().await? {
        let Some(Event::Change(pb::Change { cursor, entity: Some(entity), .. })) = message.event else {
            continue;
        };
        let outcome = store.apply(entity); // its `update_cursor` is the change's cursor
        store.cursor = cursor;
        store.save(path)?;
        println!("{}: {outcome}", store.cursor);
    }
    anyhow::bail!("the server ended the stream")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.url)?.connect_lazy();
    let mut stored = Store::load(&args.store)?;
    loop {
        let mut store = match stored.take() {
            Some(store) => {
                println!("resuming from {}", store.cursor);
                store
            }
            None => {
                let store = list(channel.clone()).await?;
                store.save(&args.store)?;
                let (contacts, accounts, links) = (store.contacts.len(), store.accounts.len(), store.links.len());
                println!("listed {contacts} contacts, {accounts} accounts, {links} links at {}", store.cursor);
                store
            }
        };
        let error = watch(channel.clone(), &mut store, &args.store).await.unwrap_err();
        let status = error.downcast_ref::<tonic::Status>();
        let reason = status.and_then(|s| s.get_details_error_info()).map(|i| i.reason);
        use tonic::Code::{InvalidArgument, OutOfRange, PermissionDenied, Unauthenticated};
        match (status.map(|s| s.code()), reason.as_deref()) {
            (_, Some("CURSOR_EXPIRED")) => println!("cursor {} expired: listing again", store.cursor),
            // Not a tonic error (the store file), or one that resuming cannot fix.
            (None | Some(InvalidArgument | OutOfRange | PermissionDenied | Unauthenticated), _) => return Err(error),
            _ => {
                eprintln!("{error:#}: resuming in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                stored = Some(store);
            }
        }
    }
}
