//! `DirectoryService`: gets, batch gets and lookups. Each RPC is one SQL statement on the read
//! pool, whose connection is released before the response is sent.

use tonic::{Request, Response, Status};

use super::convert;
use super::cursor::Cursor;
use super::error::ApiError;
use super::names;
use super::{list, traced};
use crate::pb;
use crate::pb::directory_service_server::DirectoryService;
use crate::store::read::{self, ListQuery, Snapshot, Stored, UserKey};
use crate::store::{EntityType, Record};

/// Most names in one batch get.
pub const MAX_BATCH: usize = 500;

/// The service, on its own pool so reads never wait behind ingest or the applier.
#[derive(Clone)]
pub struct Directory {
    pool: sqlx::PgPool,
    log_id: String,
}

impl Directory {
    pub fn new(pool: sqlx::PgPool, log_id: String) -> Self {
        Directory { pool, log_id }
    }

    fn cursor(&self, head: i64) -> String {
        Cursor::new(&self.log_id, head).encode()
    }

    /// The one item of a single-item snapshot, or NOT_FOUND (a tombstone too, unless `show_deleted`).
    fn found<T>(
        &self,
        snapshot: Snapshot<T>,
        what: &'static str,
        name: &str,
        show_deleted: bool,
        deleted: impl Fn(&T) -> bool,
    ) -> Result<(Stored<T>, i64), ApiError> {
        let head = snapshot.head;
        match snapshot.items.into_iter().next().flatten() {
            Some(item) if show_deleted || !deleted(&item.record) => Ok((item, head)),
            _ => Err(ApiError::NotFound {
                what,
                name: name.to_string(),
                cursor: self.cursor(head),
            }),
        }
    }

    /// Every item of a batch snapshot, or NOT_FOUND naming the first missing one.
    fn all_found<T>(
        &self,
        snapshot: Snapshot<T>,
        names: &[String],
        what: &'static str,
        show_deleted: bool,
        deleted: impl Fn(&T) -> bool,
    ) -> Result<Vec<Stored<T>>, ApiError> {
        let cursor = self.cursor(snapshot.head);
        snapshot
            .items
            .into_iter()
            .zip(names)
            .map(|(item, name)| match item {
                Some(item) if show_deleted || !deleted(&item.record) => Ok(item),
                _ => Err(ApiError::NotFound {
                    what,
                    name: name.clone(),
                    cursor: cursor.clone(),
                }),
            })
            .collect()
    }
}

fn check_batch(names: &[String]) -> Result<(), ApiError> {
    if names.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "names",
            "TOO_MANY_NAMES",
            format!("at most {MAX_BATCH} names, got {}", names.len()),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl DirectoryService for Directory {
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let r = request.into_inner();
        traced("GetUser", async {
            let id = names::user_id("name", &r.name)?;
            let snapshot = read::users_by_id(&self.pool, &[id]).await?;
            let (u, head) = self.found(snapshot, "user", &r.name, r.show_deleted, |u| u.deleted_at.is_some())?;
            Ok(pb::GetUserResponse {
                user: Some(convert::user(&u.record, u.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::GetOrganizationResponse>, Status> {
        let r = request.into_inner();
        traced("GetOrganization", async {
            let id = names::organization_id("name", &r.name)?;
            let snapshot = read::organizations_by_id(&self.pool, &[id]).await?;
            let (o, head) = self.found(snapshot, "organization", &r.name, r.show_deleted, |o| {
                o.deleted_at.is_some()
            })?;
            Ok(pb::GetOrganizationResponse {
                organization: Some(convert::organization(&o.record, o.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn get_membership(
        &self,
        request: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<pb::GetMembershipResponse>, Status> {
        let r = request.into_inner();
        traced("GetMembership", async {
            let (org, id) = names::membership_ids("name", &r.name)?;
            let snapshot = read::membership(&self.pool, org, id).await?;
            let (m, head) = self.found(snapshot, "membership", &r.name, r.show_deleted, |m| {
                m.deleted_at.is_some()
            })?;
            Ok(pb::GetMembershipResponse {
                membership: Some(convert::membership(&m.record, m.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let r = request.into_inner();
        traced("BatchGetUsers", async {
            check_batch(&r.names)?;
            let ids = r
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| names::user_id(&format!("names[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            let snapshot = read::users_by_id(&self.pool, &ids).await?;
            let head = snapshot.head;
            let users = self.all_found(snapshot, &r.names, "user", r.show_deleted, |u| u.deleted_at.is_some())?;
            Ok(pb::BatchGetUsersResponse {
                users: users
                    .iter()
                    .map(|u| convert::user(&u.record, u.update_cursor, &self.log_id))
                    .collect(),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn batch_get_organizations(
        &self,
        request: Request<pb::BatchGetOrganizationsRequest>,
    ) -> Result<Response<pb::BatchGetOrganizationsResponse>, Status> {
        let r = request.into_inner();
        traced("BatchGetOrganizations", async {
            check_batch(&r.names)?;
            let ids = r
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| names::organization_id(&format!("names[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            let snapshot = read::organizations_by_id(&self.pool, &ids).await?;
            let head = snapshot.head;
            let orgs = self.all_found(snapshot, &r.names, "organization", r.show_deleted, |o| {
                o.deleted_at.is_some()
            })?;
            Ok(pb::BatchGetOrganizationsResponse {
                organizations: orgs
                    .iter()
                    .map(|o| convert::organization(&o.record, o.update_cursor, &self.log_id))
                    .collect(),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<pb::LookupUserResponse>, Status> {
        let r = request.into_inner();
        traced("LookupUser", async {
            use pb::lookup_user_request::Key;
            let (key, field, shown) = match r.key {
                Some(Key::Email(v)) => (UserKey::Email(v.clone()), "email", v),
                Some(Key::ExternalId(v)) => (UserKey::ExternalId(v.clone()), "external_id", v),
                Some(Key::Username(v)) => (UserKey::Username(v.clone()), "username", v),
                Some(Key::PhoneNumber(v)) => (UserKey::PhoneNumber(v.clone()), "phone_number", v),
                None => {
                    return Err(ApiError::invalid(
                        "key",
                        "MISSING_KEY",
                        "set one of email, external_id, username, phone_number",
                    ));
                }
            };
            if shown.is_empty() || shown.len() > 512 {
                return Err(ApiError::invalid(field, "INVALID_KEY", "must be 1 to 512 bytes"));
            }
            let snapshot = read::user_by_key(&self.pool, &key).await?;
            let (u, head) = self.found(snapshot, "user", &format!("{field}={shown}"), false, |_| false)?;
            Ok(pb::LookupUserResponse {
                user: Some(convert::user(&u.record, u.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn lookup_organization(
        &self,
        request: Request<pb::LookupOrganizationRequest>,
    ) -> Result<Response<pb::LookupOrganizationResponse>, Status> {
        let r = request.into_inner();
        traced("LookupOrganization", async {
            if r.slug.is_empty() || r.slug.len() > 512 {
                return Err(ApiError::invalid("slug", "INVALID_KEY", "must be 1 to 512 bytes"));
            }
            let snapshot = read::organization_by_slug(&self.pool, &r.slug).await?;
            let (o, head) = self.found(snapshot, "organization", &format!("slug={}", r.slug), false, |_| false)?;
            Ok(pb::LookupOrganizationResponse {
                organization: Some(convert::organization(&o.record, o.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn lookup_membership(
        &self,
        request: Request<pb::LookupMembershipRequest>,
    ) -> Result<Response<pb::LookupMembershipResponse>, Status> {
        let r = request.into_inner();
        traced("LookupMembership", async {
            let org = names::organization_id("organization", &r.organization)?;
            let user = names::user_id("user", &r.user)?;
            let snapshot = read::membership_of(&self.pool, org, user).await?;
            let (m, head) = self.found(
                snapshot,
                "membership",
                &format!("{} in {}", r.user, r.organization),
                false,
                |_| false,
            )?;
            Ok(pb::LookupMembershipResponse {
                membership: Some(convert::membership(&m.record, m.update_cursor, &self.log_id)),
                cursor: self.cursor(head),
            })
        })
        .await
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let r = request.into_inner();
        traced("ListUsers", async {
            let page = ListPage {
                rpc: "ListUsers",
                entity: EntityType::User,
                table: "users",
                parent: "",
                organization: None,
            };
            let (users, next_page_token, cursor) = self
                .list(
                    &page,
                    r.page_size,
                    &r.page_token,
                    &r.filter,
                    r.show_deleted,
                    convert::user,
                )
                .await?;
            Ok(pb::ListUsersResponse {
                users,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let r = request.into_inner();
        traced("ListOrganizations", async {
            let page = ListPage {
                rpc: "ListOrganizations",
                entity: EntityType::Organization,
                table: "organizations",
                parent: "",
                organization: None,
            };
            let (organizations, next_page_token, cursor) = self
                .list(
                    &page,
                    r.page_size,
                    &r.page_token,
                    &r.filter,
                    r.show_deleted,
                    convert::organization,
                )
                .await?;
            Ok(pb::ListOrganizationsResponse {
                organizations,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn list_memberships(
        &self,
        request: Request<pb::ListMembershipsRequest>,
    ) -> Result<Response<pb::ListMembershipsResponse>, Status> {
        let r = request.into_inner();
        traced("ListMemberships", async {
            let organization = if r.parent == "organizations/-" {
                None
            } else {
                Some(names::organization_id("parent", &r.parent)?)
            };
            let page = ListPage {
                rpc: "ListMemberships",
                entity: EntityType::Membership,
                table: "memberships",
                parent: &r.parent,
                organization,
            };
            let (memberships, next_page_token, cursor) = self
                .list(
                    &page,
                    r.page_size,
                    &r.page_token,
                    &r.filter,
                    r.show_deleted,
                    convert::membership,
                )
                .await?;
            Ok(pb::ListMembershipsResponse {
                memberships,
                next_page_token,
                cursor,
            })
        })
        .await
    }
}

/// What a list RPC lists.
struct ListPage<'a> {
    rpc: &'static str,
    entity: EntityType,
    table: &'static str,
    /// The request's parent (bound into page tokens).
    parent: &'a str,
    /// Memberships of this organization only.
    organization: Option<&'a str>,
}

impl Directory {
    /// One page of a list RPC: the items, the next page token and the page's cursor.
    async fn list<R, M>(
        &self,
        page: &ListPage<'_>,
        page_size: i32,
        page_token: &str,
        filter_text: &str,
        show_deleted: bool,
        to_message: fn(&R, i64, &str) -> M,
    ) -> Result<(Vec<M>, String, String), ApiError>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Record,
        M: prost::Message,
    {
        let size = list::page_size(page_size)?;
        let filter = list::filter(page.entity, filter_text)?;
        let binding = list::binding(page.rpc, page.parent, filter_text, show_deleted);
        let after = list::decode_token(page_token, &binding)?;
        let query = ListQuery {
            table: page.table,
            after: &after,
            limit: size + 1,
            show_deleted,
            organization_id: page.organization,
            user_id: None,
            id: None,
            filter: filter.as_ref(),
        };
        let snapshot = read::list::<R>(&self.pool, &query).await?;
        let items = snapshot
            .items
            .iter()
            .flatten()
            .map(|item| {
                (
                    item.record.id().to_string(),
                    to_message(&item.record, item.update_cursor, &self.log_id),
                )
            })
            .collect();
        let (messages, next) = list::page(items, size, &binding);
        Ok((messages, next, self.cursor(snapshot.head)))
    }
}
