//! `DirectoryService`: gets, batch gets and lookups. Each is answered from the replica's read
//! cache when its `consistency` allows and the cache holds the answer; otherwise it is one SQL
//! statement on the read pool, whose connection is released before the response is sent. The
//! entity goes out encoded (`pb::served`): from memory, as the cache holds it.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::cursor::{self, Cursor};
use super::error::ApiError;
use super::names;
use super::{list, traced};
use sqlx::postgres::PgConnection;

use crate::cache::{Answer, Held, ReadCache, ReadIndex, Waited};
use crate::lender::Lender;
use crate::pb::served::directory_service_server::DirectoryService;
use crate::pb::{self, Encoded, served};
use crate::store::read::{self, ListQuery, Snapshot, Stored, UserKey};
use crate::store::{Kind, MembershipRecord, OrganizationRecord, UserRecord};

/// Most names in one batch get.
pub const MAX_BATCH: usize = 500;

/// The service, on its own pool so reads never wait behind ingest or the applier.
#[derive(Clone)]
pub struct Directory {
    pub(super) pool: sqlx::PgPool,
    /// Connections for point reads that memory cannot answer.
    lender: Arc<Lender>,
    log_id: String,
    pub(super) cache: ReadCache,
    /// The log's head for `fully_consistent` reads, one shared query at a time.
    read_index: ReadIndex,
    /// Longest an `at_least_as_fresh` read waits for the cache.
    max_wait: Duration,
    /// Whether organization Billing gates custom permissions (see `Config`).
    pub(super) billing_gates: bool,
    /// Who is entitled to what (the gated permissions' features).
    pub(super) entitlements: crate::store::entitlement::Policy,
}

/// Longest a `fully_consistent` read waits for the cache to reach the log's head before reading
/// PostgreSQL instead.
const READ_INDEX_WAIT: Duration = Duration::from_secs(1);

/// Where one read goes, from its `consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The read cache (it has applied whatever the caller required).
    Memory,
    /// PostgreSQL; its snapshot must reach `at_least` (a cursor's seq), if given.
    Postgres { at_least: Option<i64> },
}

/// The request's deadline (`grpc-timeout`: up to 8 digits and a unit), if it has one.
pub(super) fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    if !text.is_ascii() || text.len() < 2 || text.len() > 9 {
        return None;
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Directory {
    pub fn new(
        pool: sqlx::PgPool,
        lender: Arc<Lender>,
        log_id: String,
        cache: ReadCache,
        max_wait: Duration,
        billing_gates: bool,
        entitlements: crate::store::entitlement::Policy,
    ) -> Self {
        Directory {
            read_index: ReadIndex::new(pool.clone()),
            pool,
            lender,
            log_id,
            cache,
            max_wait,
            billing_gates,
            entitlements,
        }
    }

    /// Decides where a read goes; an `at_least_as_fresh` read may wait here for the cache.
    pub(super) async fn route(
        &self,
        consistency: Option<&pb::Consistency>,
        deadline: Option<Duration>,
    ) -> Result<Route, ApiError> {
        use pb::consistency::Requirement;
        let requirement = consistency.and_then(|c| c.requirement.as_ref());
        let fresh = match requirement {
            None | Some(Requirement::MinimizeLatency(_)) => None,
            Some(Requirement::FullyConsistent(_)) => {
                self.cache.count("fully_consistent");
                return self.read_index_route(deadline).await;
            }
            Some(Requirement::AtLeastAsFresh(a)) => Some((self.token(&a.cursor).await?, a.cursor.as_str())),
        };
        let state = self.cache.state();
        if !state.ready {
            self.cache.count("not_ready");
            return Ok(Route::Postgres {
                at_least: fresh.map(|(seq, _)| seq),
            });
        }
        let Some((seq, requested)) = fresh else {
            return Ok(Route::Memory);
        };
        if state.cursor >= seq {
            return Ok(Route::Memory);
        }
        // Behind: a cursor past the database's head will never be applied.
        let head = read::head(&self.pool).await?;
        if seq > head {
            return Err(self.in_future(head));
        }
        // Answer before the caller's deadline does, so it gets the reason rather than a timeout.
        let wait = deadline.map_or(self.max_wait, |d| (d - d / 10).min(self.max_wait));
        match self.cache.wait_for(seq, wait).await {
            Waited::Reached => Ok(Route::Memory),
            Waited::NotServing => Ok(Route::Postgres { at_least: Some(seq) }),
            Waited::TimedOut(cursor) => Err(ApiError::NotYetConsistent {
                replica_cursor: self.cursor(cursor),
                requested_cursor: requested.to_string(),
            }),
        }
    }

    /// A `fully_consistent` read: memory once the cache has applied the log's head as of now
    /// (the read index), else PostgreSQL (the cache is not serving, or lags past a short wait).
    async fn read_index_route(&self, deadline: Option<Duration>) -> Result<Route, ApiError> {
        if !self.cache.state().ready {
            return Ok(Route::Postgres { at_least: None });
        }
        let head = self.read_index.head().await?;
        // A cache that lags past this is not waited for: PostgreSQL answers within the deadline.
        let wait = deadline.map_or(self.max_wait, |d| d / 2).min(READ_INDEX_WAIT);
        Ok(match self.cache.wait_for(head, wait).await {
            Waited::Reached => Route::Memory,
            Waited::NotServing | Waited::TimedOut(_) => Route::Postgres { at_least: None },
        })
    }

    /// The seq of an `at_least_as_fresh` cursor of this log (another log's: as the watch does).
    async fn token(&self, text: &str) -> Result<i64, ApiError> {
        match cursor::seq_in_log("consistency.at_least_as_fresh.cursor", text, &self.log_id)? {
            Some(seq) => Ok(seq),
            None => {
                let (log_id, bounds) = crate::store::changes::bounds(&self.pool).await?;
                Err(ApiError::cursor_of_another_log(
                    Cursor::new(&log_id, bounds.oldest - 1).encode(),
                ))
            }
        }
    }

    fn in_future(&self, head: i64) -> ApiError {
        ApiError::CursorInFuture {
            head_cursor: self.cursor(head),
        }
    }

    /// Checks a PostgreSQL snapshot against the route's requirement.
    pub(super) fn fresh(&self, route: Route, head: i64) -> Result<(), ApiError> {
        match route {
            Route::Postgres { at_least: Some(seq) } if head < seq => Err(self.in_future(head)),
            _ => Ok(()),
        }
    }

    /// The cache's answer on the memory route; `None`: read PostgreSQL.
    pub(super) fn memory<T>(&self, route: Route, f: impl FnOnce(&crate::cache::Index) -> Answer<T>) -> Option<Answer<T>> {
        if route != Route::Memory {
            return None;
        }
        match self.cache.read(f) {
            Some(Answer::Unknown) | None => {
                self.cache.count("fallback");
                None
            }
            Some(answer) => {
                self.cache.count(if matches!(answer, Answer::Found(..)) {
                    "hit"
                } else {
                    "absent"
                });
                Some(answer)
            }
        }
    }

    /// A cached item, or NOT_FOUND (a tombstone too, unless `show_deleted`).
    fn found_in_memory<M>(
        &self,
        answer: Answer<Held<M>>,
        what: &'static str,
        name: &str,
        show_deleted: bool,
    ) -> Result<(Encoded<M>, i64), ApiError> {
        match answer {
            Answer::Found(item, head) if show_deleted || !item.deleted => Ok((item.message, head)),
            Answer::Found(_, head) | Answer::Absent(head) => Err(ApiError::NotFound {
                what,
                name: name.to_string(),
                cursor: self.cursor(head),
            }),
            Answer::Unknown => Err(ApiError::Internal(anyhow::anyhow!("an unknown answer was served"))),
        }
    }

    /// Every cached item of a batch, or NOT_FOUND naming the first missing one.
    fn all_found_in_memory<M>(
        &self,
        items: Vec<Option<Held<M>>>,
        head: i64,
        names: &[String],
        what: &'static str,
        show_deleted: bool,
    ) -> Result<Vec<Encoded<M>>, ApiError> {
        items
            .into_iter()
            .zip(names)
            .map(|(item, name)| match item {
                Some(item) if show_deleted || !item.deleted => Ok(item.message),
                _ => Err(ApiError::NotFound {
                    what,
                    name: name.clone(),
                    cursor: self.cursor(head),
                }),
            })
            .collect()
    }

    /// A batch from the cache, counted; `None`: read PostgreSQL.
    fn batch_in_memory<T>(
        &self,
        route: Route,
        f: impl FnOnce(&crate::cache::Index) -> Option<(Vec<Option<T>>, i64)>,
    ) -> Option<(Vec<Option<T>>, i64)> {
        if route != Route::Memory {
            return None;
        }
        match self.cache.read(f).flatten() {
            Some(found) => {
                self.cache.count("hit");
                Some(found)
            }
            None => {
                self.cache.count("fallback");
                None
            }
        }
    }

    /// The change log's id (what cursors name).
    pub(super) fn log_id(&self) -> &str {
        &self.log_id
    }

    pub(super) fn cursor(&self, head: i64) -> String {
        Cursor::text(&self.log_id, head)
    }

    /// One entity named `name`: from memory on the memory route when the cache holds the
    /// answer, else one PostgreSQL statement; NOT_FOUND if absent, and for a tombstone too
    /// unless `show_deleted`. Returns it and the cursor it reflects.
    pub(super) async fn one<K: Kind>(
        &self,
        route: Route,
        name: &str,
        show_deleted: bool,
        memory: impl FnOnce(&crate::cache::Index) -> Answer<Held<K::Message>>,
        postgres: impl AsyncFnOnce(&mut PgConnection) -> Result<Snapshot<K>, sqlx::Error>,
    ) -> Result<(Encoded<K::Message>, String), ApiError> {
        if let Some(answer) = self.memory(route, memory) {
            return self.one_in_memory::<K>(answer, name, show_deleted);
        }
        self.one_in_postgres::<K>(route, name, show_deleted, postgres).await
    }

    /// [`Directory::one`]'s answer from memory, with the cursor it reflects.
    fn one_in_memory<K: Kind>(
        &self,
        answer: Answer<Held<K::Message>>,
        name: &str,
        show_deleted: bool,
    ) -> Result<(Encoded<K::Message>, String), ApiError> {
        let (message, head) = self.found_in_memory(answer, K::TYPE.as_str(), name, show_deleted)?;
        Ok((message, self.cursor(head)))
    }

    /// [`Directory::one`]'s PostgreSQL read: the row converted to its message.
    async fn one_in_postgres<K: Kind>(
        &self,
        route: Route,
        name: &str,
        show_deleted: bool,
        postgres: impl AsyncFnOnce(&mut PgConnection) -> Result<Snapshot<K>, sqlx::Error>,
    ) -> Result<(Encoded<K::Message>, String), ApiError> {
        let snapshot = self.point_read(postgres).await?;
        self.fresh(route, snapshot.head)?;
        let (item, head) = self.found(snapshot, K::TYPE.as_str(), name, show_deleted, |r| r.deleted_at().is_some())?;
        Ok((
            Encoded::of(&item.record.message(item.update_cursor, &self.log_id)),
            self.cursor(head),
        ))
    }

    /// A get by id of a kind that keeps its message (`Kind::STORES_MESSAGE`): memory as
    /// [`Directory::one`], else the stored message as it is (no JSON, no conversion), else,
    /// for a row kept in another format, the row converted.
    pub(super) async fn one_stored<K: Kind>(
        &self,
        route: Route,
        name: &str,
        id: &str,
        show_deleted: bool,
        memory: impl FnOnce(&crate::cache::Index) -> Answer<Held<K::Message>>,
    ) -> Result<(Encoded<K::Message>, String), ApiError> {
        if let Some(answer) = self.memory(route, memory) {
            return self.one_in_memory::<K>(answer, name, show_deleted);
        }
        let stored = self.point_read(async |c| read::stored_message::<K>(c, id).await).await?;
        self.fresh(route, stored.head)?;
        match stored.row {
            Some((deleted, Some(message))) if show_deleted || !deleted => {
                Ok((Encoded::from_bytes(message.into()), self.cursor(stored.head)))
            }
            Some((_, None)) => {
                self.one_in_postgres::<K>(route, name, show_deleted, async |c| read::by_id::<K>(c, id).await)
                    .await
            }
            Some((_, Some(_))) | None => Err(ApiError::NotFound {
                what: K::TYPE.as_str(),
                name: name.to_string(),
                cursor: self.cursor(stored.head),
            }),
        }
    }

    /// Every entity `names` name, in order, as [`Directory::one`] reads one; NOT_FOUND names
    /// the first missing one.
    async fn batch<K: Kind>(
        &self,
        route: Route,
        names: &[String],
        show_deleted: bool,
        memory: impl FnOnce(&crate::cache::Index) -> Option<(Vec<Option<Held<K::Message>>>, i64)>,
        postgres: impl AsyncFnOnce(&mut PgConnection) -> Result<Snapshot<K>, sqlx::Error>,
    ) -> Result<(Vec<Encoded<K::Message>>, String), ApiError> {
        let what = K::TYPE.as_str();
        if let Some((items, head)) = self.batch_in_memory(route, memory) {
            let messages = self.all_found_in_memory(items, head, names, what, show_deleted)?;
            return Ok((messages, self.cursor(head)));
        }
        let snapshot = self.point_read(postgres).await?;
        self.fresh(route, snapshot.head)?;
        let head = snapshot.head;
        let items = self.all_found(snapshot, names, what, show_deleted, |r| r.deleted_at().is_some())?;
        let messages = items
            .iter()
            .map(|i| Encoded::of(&i.record.message(i.update_cursor, &self.log_id)))
            .collect();
        Ok((messages, self.cursor(head)))
    }

    /// A point read (a get, batch get or lookup) on a lent connection, given back after it.
    async fn point_read<T>(
        &self,
        read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        let mut lent = self.lender.lend().await?;
        // On an error the connection is dropped (closed), not given back.
        let result = read(lent.connection()).await?;
        lent.returned();
        Ok(result)
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
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<served::GetUserResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetUser", async {
            let id = names::user_id("name", &r.name)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (user, cursor) = self
                .one_stored::<UserRecord>(route, &r.name, id, r.show_deleted, |i| i.user(id))
                .await?;
            Ok(served::GetUserResponse {
                user: Some(user),
                cursor,
            })
        })
        .await
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<served::GetOrganizationResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetOrganization", async {
            let id = names::organization_id("name", &r.name)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (organization, cursor) = self
                .one_stored::<OrganizationRecord>(route, &r.name, id, r.show_deleted, |i| i.organization(id))
                .await?;
            Ok(served::GetOrganizationResponse {
                organization: Some(organization),
                cursor,
            })
        })
        .await
    }

    async fn get_membership(
        &self,
        request: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<served::GetMembershipResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetMembership", async {
            let (org, id) = names::membership_ids("name", &r.name)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (membership, cursor) = self
                .one(
                    route,
                    &r.name,
                    r.show_deleted,
                    |i| i.membership(org, id),
                    async |c| read::membership(c, org, id).await,
                )
                .await?;
            Ok(served::GetMembershipResponse {
                membership: Some(membership),
                cursor,
            })
        })
        .await
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<served::BatchGetUsersResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("BatchGetUsers", async {
            check_batch(&r.names)?;
            let ids = r
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| names::user_id(&format!("names[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (users, cursor) = self
                .batch(
                    route,
                    &r.names,
                    r.show_deleted,
                    |i| i.users(&ids),
                    async |c| read::users_by_id(c, &ids).await,
                )
                .await?;
            Ok(served::BatchGetUsersResponse { users, cursor })
        })
        .await
    }

    async fn batch_get_organizations(
        &self,
        request: Request<pb::BatchGetOrganizationsRequest>,
    ) -> Result<Response<served::BatchGetOrganizationsResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("BatchGetOrganizations", async {
            check_batch(&r.names)?;
            let ids = r
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| names::organization_id(&format!("names[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (organizations, cursor) = self
                .batch(
                    route,
                    &r.names,
                    r.show_deleted,
                    |i| i.organizations(&ids),
                    async |c| read::organizations_by_id(c, &ids).await,
                )
                .await?;
            Ok(served::BatchGetOrganizationsResponse { organizations, cursor })
        })
        .await
    }

    async fn lookup_user(
        &self,
        request: Request<pb::LookupUserRequest>,
    ) -> Result<Response<served::LookupUserResponse>, Status> {
        let deadline = deadline(request.metadata());
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
            // PostgreSQL text cannot hold NUL (nothing stored has one): refused alike on every route.
            if shown.contains('\0') {
                return Err(ApiError::invalid(field, "INVALID_KEY", "must not contain NUL"));
            }
            let name = format!("{field}={shown}");
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            // A lookup finds live entities only, so there is no tombstone to hide.
            let (user, cursor) = self
                .one(
                    route,
                    &name,
                    true,
                    |i| i.user_by(&key),
                    async |c| read::user_by_key(c, &key).await,
                )
                .await?;
            Ok(served::LookupUserResponse {
                user: Some(user),
                cursor,
            })
        })
        .await
    }

    async fn lookup_organization(
        &self,
        request: Request<pb::LookupOrganizationRequest>,
    ) -> Result<Response<served::LookupOrganizationResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("LookupOrganization", async {
            if r.slug.is_empty() || r.slug.len() > 512 {
                return Err(ApiError::invalid("slug", "INVALID_KEY", "must be 1 to 512 bytes"));
            }
            if r.slug.contains('\0') {
                return Err(ApiError::invalid("slug", "INVALID_KEY", "must not contain NUL"));
            }
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let name = format!("slug={}", r.slug);
            let (organization, cursor) = self
                .one(
                    route,
                    &name,
                    true,
                    |i| i.organization_by_slug(&r.slug),
                    async |c| read::organization_by_slug(c, &r.slug).await,
                )
                .await?;
            Ok(served::LookupOrganizationResponse {
                organization: Some(organization),
                cursor,
            })
        })
        .await
    }

    async fn lookup_membership(
        &self,
        request: Request<pb::LookupMembershipRequest>,
    ) -> Result<Response<served::LookupMembershipResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("LookupMembership", async {
            let org = names::organization_id("organization", &r.organization)?;
            let user = names::user_id("user", &r.user)?;
            let name = format!("{} in {}", r.user, r.organization);
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (membership, cursor) = self
                .one(
                    route,
                    &name,
                    true,
                    |i| i.membership_of(org, user),
                    async |c| read::membership_of(c, org, user).await,
                )
                .await?;
            Ok(served::LookupMembershipResponse {
                membership: Some(membership),
                cursor,
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
                parent: "",
                organization: None,
                consistency: r.consistency.as_ref(),
            };
            let (users, next_page_token, cursor) = self
                .list::<UserRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
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
                parent: "",
                organization: None,
                consistency: r.consistency.as_ref(),
            };
            let (organizations, next_page_token, cursor) = self
                .list::<OrganizationRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
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
            let page = ListPage::under_organization("ListMemberships", &r.parent, r.consistency.as_ref())?;
            let (memberships, next_page_token, cursor) = self
                .list::<MembershipRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
                .await?;
            Ok(pb::ListMembershipsResponse {
                memberships,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    async fn get_role(&self, request: Request<pb::GetRoleRequest>) -> Result<Response<served::GetRoleResponse>, Status> {
        self.get_role_rpc(request).await
    }

    async fn lookup_role(
        &self,
        request: Request<pb::LookupRoleRequest>,
    ) -> Result<Response<served::LookupRoleResponse>, Status> {
        self.lookup_role_rpc(request).await
    }

    async fn list_roles(&self, request: Request<pb::ListRolesRequest>) -> Result<Response<pb::ListRolesResponse>, Status> {
        self.list_roles_rpc(request).await
    }

    async fn list_permissions(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        self.list_permissions_rpc(request).await
    }

    async fn check_permission(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        self.check_permission_rpc(request).await
    }

    async fn check_permissions(
        &self,
        request: Request<pb::CheckPermissionsRequest>,
    ) -> Result<Response<pb::CheckPermissionsResponse>, Status> {
        self.check_permissions_rpc(request).await
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        self.list_domains_rpc(request).await
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Result<Response<served::GetInvitationResponse>, Status> {
        self.get_invitation_rpc(request).await
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        self.list_invitations_rpc(request).await
    }
}

/// What a list RPC lists.
pub(super) struct ListPage<'a> {
    pub(super) rpc: &'static str,
    /// The request's parent (bound into page tokens).
    pub(super) parent: &'a str,
    /// Memberships of this organization only.
    pub(super) organization: Option<&'a str>,
    /// The request's `consistency` (lists read PostgreSQL; an `at_least_as_fresh` cursor is
    /// checked against the page's snapshot).
    pub(super) consistency: Option<&'a pb::Consistency>,
}

impl<'a> ListPage<'a> {
    /// A page of a list that has no parent (the instance's roles, permissions, plans, items).
    pub(super) fn of_instance(rpc: &'static str, consistency: Option<&'a pb::Consistency>) -> ListPage<'a> {
        ListPage {
            rpc,
            parent: "",
            organization: None,
            consistency,
        }
    }

    /// A page of a list whose `parent` is `organizations/{id}` (that organization's entities) or
    /// `organizations/-` (every organization's).
    pub(super) fn under_organization(
        rpc: &'static str,
        parent: &'a str,
        consistency: Option<&'a pb::Consistency>,
    ) -> Result<ListPage<'a>, ApiError> {
        let organization = match parent {
            "organizations/-" => None,
            parent => Some(names::organization_id("parent", parent)?),
        };
        Ok(ListPage {
            rpc,
            parent,
            organization,
            consistency,
        })
    }
}

impl Directory {
    /// One page of a list RPC: the items, the next page token and the page's cursor.
    pub(super) async fn list<K: Kind>(
        &self,
        page: &ListPage<'_>,
        page_size: i32,
        page_token: &str,
        filter_text: &str,
        show_deleted: bool,
    ) -> Result<(Vec<K::Message>, String, String), ApiError> {
        let size = list::page_size(page_size)?;
        let filter = list::filter(K::TYPE, filter_text)?;
        let at_least = match page.consistency.and_then(|c| c.requirement.as_ref()) {
            Some(pb::consistency::Requirement::AtLeastAsFresh(a)) => Some(self.token(&a.cursor).await?),
            _ => None,
        };
        let binding = list::binding(page.rpc, page.parent, filter_text, show_deleted);
        let after = list::decode_token(page_token, &binding)?;
        let query = ListQuery {
            table: K::READ_FROM,
            after: &after,
            limit: size + 1,
            show_deleted,
            organization_id: page.organization,
            user_id: None,
            id: None,
            filter: filter.as_ref(),
        };
        let snapshot = read::list::<K>(&self.pool, &query).await?;
        self.fresh(Route::Postgres { at_least }, snapshot.head)?;
        let items = snapshot
            .items
            .iter()
            .flatten()
            .map(|item| {
                (
                    item.record.id().to_string(),
                    item.record.message(item.update_cursor, &self.log_id),
                )
            })
            .collect();
        let (messages, next) = list::page(items, size, &binding);
        Ok((messages, next, self.cursor(snapshot.head)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<Duration> {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", text.parse().unwrap());
        deadline(&m)
    }

    #[test]
    fn a_grpc_timeout_header_is_read_in_each_unit_and_nonsense_is_no_deadline() {
        assert_eq!(parse("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse("9n"), Some(Duration::from_nanos(9)));
        for bad in ["m", "12", "5x", "123456789S", "-1S"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(deadline(&tonic::metadata::MetadataMap::new()), None);
    }
}
