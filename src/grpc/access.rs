//! `DirectoryService`'s roles, permissions, permission checks and domains: GetRole, LookupRole,
//! ListRoles, ListPermissions, CheckPermission, CheckPermissions and ListDomains. Reads route as every
//! directory read does (memory when `consistency` allows and the cache holds the answer, else one
//! PostgreSQL statement); a check is decided by `store::access::check` from what either read.

use tonic::{Request, Response, Status};

use super::directory::{Directory, ListPage, Route, deadline};
use super::error::ApiError;
use super::{names, traced};
use crate::pb;
use crate::store::access::{self, Gate, Standing};
use crate::store::entitlement;
use crate::store::read;
use crate::store::{PermissionRecord, RoleRecord};

/// Most checks in one CheckPermissions.
pub const MAX_CHECKS: usize = 100;

/// Longest permission key or role key accepted (Clerk's are well under it).
const MAX_KEY_BYTES: usize = 512;

/// A key field: 1 to 512 bytes, no NUL (PostgreSQL text cannot hold it; refused alike on every
/// route).
fn key<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_KEY_BYTES {
        return Err(ApiError::invalid(field, "INVALID_KEY", format!("must be 1 to {MAX_KEY_BYTES} bytes")));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid(field, "INVALID_KEY", "must not contain NUL"));
    }
    Ok(value)
}

/// 1 to [`MAX_CHECKS`] checks in one request (CheckPermissions, CheckEntitlements).
pub(super) fn check_count(n: usize) -> Result<(), ApiError> {
    if n == 0 || n > MAX_CHECKS {
        return Err(ApiError::invalid(
            "checks",
            "INVALID_CHECK_COUNT",
            format!("1 to {MAX_CHECKS} checks, got {n}"),
        ));
    }
    Ok(())
}

/// One check's parsed fields: organization id, user id, permission key.
type Check<'a> = (&'a str, &'a str, &'a str);

/// One check's fields; `at` names where they are in the request (`checks[3].`), for errors.
fn parse_check<'a>(at: &str, organization: &'a str, user: &'a str, permission: &'a str) -> Result<Check<'a>, ApiError> {
    // The field names are made only for an error (a check is on the hot path).
    let field = |name: &str| format!("{at}{name}");
    let organization = names::organization_id("organization", organization)
        .map_err(|_| names::organization_id(&field("organization"), organization).unwrap_err())?;
    let user = names::user_id("user", user).map_err(|_| names::user_id(&field("user"), user).unwrap_err())?;
    let permission = key("permission", permission).map_err(|_| key(&field("permission"), permission).unwrap_err())?;
    Ok((organization, user, permission))
}

impl Directory {
    /// Answers `checks` at one snapshot: from memory when the route allows and the cache holds
    /// every standing, else one PostgreSQL statement. Returns the verdicts and the cursor.
    async fn decide(&self, route: Route, checks: &[Check<'_>]) -> Result<(Vec<access::Verdict>, String), ApiError> {
        let now = chrono::Utc::now();
        let gates = self.billing_gates;
        let from_memory = match route {
            Route::Memory => self
                .cache
                .read(|i| {
                    let billing = i.billing();
                    let held = gates && billing.holds_plans_for("organization");
                    let decided: Option<Vec<(Standing, Gate)>> = checks
                        .iter()
                        .map(|(o, u, p)| {
                            let gate = access::gate(gates, held, p, |f| {
                                billing.decide(&format!("organizations/{o}"), f, now, self.entitlements).entitled
                            });
                            Some((i.standing(o, u, p)?, gate))
                        })
                        .collect();
                    decided.map(|d| (d, i.cursor()))
                })
                .flatten(),
            Route::Postgres { .. } => None,
        };
        let (decided, head) = match from_memory {
            Some(found) => {
                self.cache.count("hit");
                found
            }
            None => {
                if route == Route::Memory {
                    self.cache.count("fallback");
                }
                // Plans are read only for a key Billing may gate (`org:<feature>:…`): without
                // one, a gate needs none (system keys are never gated, others take the snapshot).
                let found = if gates && checks.iter().any(|(_, _, p)| access::feature_of(p).is_some()) {
                    self.standings_and_plans(checks, now).await?
                } else {
                    let mut conn = self.pool.acquire().await?;
                    let (standings, head) = read::standings(&mut conn, checks).await?;
                    let gates = checks.iter().map(|(_, _, p)| access::gate(gates, false, p, |_| false));
                    (standings.into_iter().zip(gates).collect(), head)
                };
                self.fresh(route, found.1)?;
                found
            }
        };
        let verdicts = decided
            .iter()
            .zip(checks)
            .map(|((s, gate), (_, _, p))| access::check(s, p, *gate))
            .collect();
        Ok((verdicts, self.cursor(head)))
    }

    /// The standings of `checks` and how Billing gates each, read from PostgreSQL at one snapshot
    /// (a read-only repeatable-read transaction).
    async fn standings_and_plans(
        &self,
        checks: &[Check<'_>],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Vec<(Standing, Gate)>, i64), ApiError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let (standings, head) = read::standings(&mut *tx, checks).await?;
        let payers: Vec<String> = checks.iter().map(|(o, _, _)| format!("organizations/{o}")).collect();
        let payer_refs: Vec<&str> = payers.iter().map(String::as_str).collect();
        let (items, plans, _) = read::entitlement_facts(&mut *tx, &payer_refs).await?;
        tx.rollback().await?;
        let held = entitlement::holds_plans_for(&plans, "organization");
        let find = |id: &str| plans.iter().find(|x| x.id == id);
        let decided = standings
            .into_iter()
            .zip(checks.iter().zip(&items).zip(&payer_refs))
            .map(|(s, (((_, _, p), items), payer))| {
                let gate = access::gate(true, held, p, |f| {
                    entitlement::decide_for(payer, items, &plans, find, f, now, self.entitlements).entitled
                });
                (s, gate)
            })
            .collect();
        Ok((decided, head))
    }

    pub(super) async fn get_role_rpc(
        &self,
        request: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::served::GetRoleResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("GetRole", async {
            let id = names::role_id("name", &r.name)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (role, cursor) = self
                .one::<RoleRecord>(route, &r.name, r.show_deleted, |i| i.role(id), async |c| read::by_id::<RoleRecord>(c, id).await)
                .await?;
            Ok(pb::served::GetRoleResponse { role: Some(role), cursor })
        })
        .await
    }

    pub(super) async fn lookup_role_rpc(
        &self,
        request: Request<pb::LookupRoleRequest>,
    ) -> Result<Response<pb::served::LookupRoleResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("LookupRole", async {
            let k = key("key", &r.key)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let name = format!("key={k}");
            // A lookup finds live roles only, so there is no tombstone to hide.
            let (role, cursor) = self
                .one::<RoleRecord>(route, &name, true, |i| i.role_by_key(k), async |c| read::role_by_key(c, k).await)
                .await?;
            Ok(pb::served::LookupRoleResponse { role: Some(role), cursor })
        })
        .await
    }

    pub(super) async fn list_roles_rpc(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let r = request.into_inner();
        traced("ListRoles", async {
            let page = ListPage::of_instance("ListRoles", r.consistency.as_ref());
            let (roles, next_page_token, cursor) = self
                .list::<RoleRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
                .await?;
            Ok(pb::ListRolesResponse {
                roles,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    pub(super) async fn list_permissions_rpc(
        &self,
        request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let r = request.into_inner();
        traced("ListPermissions", async {
            let page = ListPage::of_instance("ListPermissions", r.consistency.as_ref());
            let (permissions, next_page_token, cursor) = self
                .list::<PermissionRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
                .await?;
            Ok(pb::ListPermissionsResponse {
                permissions,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    pub(super) async fn list_domains_rpc(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        let r = request.into_inner();
        traced("ListDomains", async {
            let page = ListPage::under_organization("ListDomains", &r.parent, r.consistency.as_ref())?;
            let (domains, next_page_token, cursor) = self
                .list::<crate::store::DomainRecord>(&page, r.page_size, &r.page_token, &r.filter, r.show_deleted)
                .await?;
            Ok(pb::ListDomainsResponse {
                domains,
                next_page_token,
                cursor,
            })
        })
        .await
    }

    pub(super) async fn check_permission_rpc(
        &self,
        request: Request<pb::CheckPermissionRequest>,
    ) -> Result<Response<pb::CheckPermissionResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("CheckPermission", async {
            let check = parse_check("", &r.organization, &r.user, &r.permission)?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (mut verdicts, cursor) = self.decide(route, &[check]).await?;
            let v = verdicts.pop().expect("one verdict per check");
            Ok(pb::CheckPermissionResponse {
                allowed: v.allowed,
                role: v.role,
                source: v.source as i32,
                cursor,
            })
        })
        .await
    }

    pub(super) async fn check_permissions_rpc(
        &self,
        request: Request<pb::CheckPermissionsRequest>,
    ) -> Result<Response<pb::CheckPermissionsResponse>, Status> {
        let deadline = deadline(request.metadata());
        let r = request.into_inner();
        traced("CheckPermissions", async {
            check_count(r.checks.len())?;
            let checks = r
                .checks
                .iter()
                .enumerate()
                .map(|(i, c)| parse_check(&format!("checks[{i}]."), &c.organization, &c.user, &c.permission))
                .collect::<Result<Vec<_>, _>>()?;
            let route = self.route(r.consistency.as_ref(), deadline).await?;
            let (verdicts, cursor) = self.decide(route, &checks).await?;
            Ok(pb::CheckPermissionsResponse {
                results: verdicts
                    .into_iter()
                    .map(|v| pb::PermissionCheckResult {
                        allowed: v.allowed,
                        role: v.role,
                        source: v.source as i32,
                    })
                    .collect(),
                cursor,
            })
        })
        .await
    }
}

