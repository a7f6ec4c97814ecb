//! Invented Clerk events for tests: envelopes around users, organizations, memberships, roles and
//! permissions, with the timestamps each test needs.

use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z in milliseconds.
pub const T: i64 = 1_767_225_600_000;

pub fn envelope(event_type: &str, timestamp_ms: i64, data: Value) -> String {
    json!({
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "203.0.113.1", "user_agent": "test"}},
        "instance_id": "ins_test", "object": "event", "timestamp": timestamp_ms, "type": event_type
    })
    .to_string()
}

pub fn user(id: &str, updated_ms: i64, first_name: &str) -> Value {
    json!({
        "id": id, "object": "user", "external_id": format!("ext-{id}"), "username": format!("name-{id}"),
        "first_name": first_name, "last_name": "Tester", "image_url": "https://img.example.com/x.png",
        "primary_email_address_id": format!("idn_e1_{id}"),
        "email_addresses": [
            {"id": format!("idn_e1_{id}"), "object": "email_address", "email_address": format!("{id}@Example.com"),
             "verification": {"status": "verified", "strategy": "email_code"}},
            {"id": format!("idn_e2_{id}"), "object": "email_address", "email_address": format!("second.{id}@example.org"),
             "verification": null}
        ],
        "phone_numbers": [{"id": format!("idn_p_{id}"), "object": "phone_number", "phone_number": "+15555550100"}],
        "public_metadata": {"plan": "free"}, "private_metadata": null, "unsafe_metadata": {},
        "banned": false, "locked": false, "created_at": T, "updated_at": updated_ms, "last_sign_in_at": null
    })
}

pub fn user_event(kind: &str, id: &str, updated_ms: i64, event_ms: i64, first_name: &str) -> String {
    envelope(&format!("user.{kind}"), event_ms, user(id, updated_ms, first_name))
}

pub fn user_deleted(id: &str, event_ms: i64) -> String {
    envelope(
        "user.deleted",
        event_ms,
        json!({"object": "user", "id": id, "deleted": true, "external_id": format!("ext-{id}")}),
    )
}

pub fn org(id: &str, updated_ms: i64, name: &str) -> Value {
    json!({
        "object": "organization", "id": id, "name": name, "slug": format!("slug-{id}"),
        "image_url": "https://img.example.com/o.png", "has_image": true, "members_count": 2,
        "max_allowed_memberships": 0, "admin_delete_enabled": true,
        "public_metadata": {"tier": "team"}, "private_metadata": {}, "created_at": T, "updated_at": updated_ms
    })
}

pub fn org_event(kind: &str, id: &str, updated_ms: i64, event_ms: i64, name: &str) -> String {
    envelope(&format!("organization.{kind}"), event_ms, org(id, updated_ms, name))
}

pub fn org_deleted(id: &str, event_ms: i64) -> String {
    envelope(
        "organization.deleted",
        event_ms,
        json!({"object": "organization", "id": id, "deleted": true, "slug": format!("slug-{id}")}),
    )
}

pub fn membership(id: &str, org_id: &str, user_id: &str, updated_ms: i64, role: &str) -> Value {
    json!({
        "object": "organization_membership", "id": id, "role": role, "role_name": role.trim_start_matches("org:"),
        "permissions": ["org:sys_memberships:read"], "public_metadata": {}, "private_metadata": null,
        "organization": org(org_id, T, "Snapshot name"),
        "public_user_data": {"user_id": user_id, "first_name": "Snap", "last_name": "Shot", "identifier": format!("{user_id}@example.com")},
        "created_at": T, "updated_at": updated_ms
    })
}

pub fn membership_event(
    kind: &str,
    id: &str,
    org_id: &str,
    user_id: &str,
    updated_ms: i64,
    event_ms: i64,
    role: &str,
) -> String {
    envelope(
        &format!("organizationMembership.{kind}"),
        event_ms,
        membership(id, org_id, user_id, updated_ms, role),
    )
}

/// A Clerk permission object (as `permission.*` and a role's `permissions` carry it).
pub fn permission(id: &str, key: &str, updated_ms: i64) -> Value {
    json!({
        "object": "permission", "id": id, "name": format!("Name of {key}"), "key": key,
        "description": format!("Allows {key}"), "type": if key.starts_with("org:sys_") { "system" } else { "custom" },
        "created_at": T, "updated_at": updated_ms
    })
}

pub fn permission_event(kind: &str, id: &str, key: &str, updated_ms: i64, event_ms: i64) -> String {
    envelope(&format!("permission.{kind}"), event_ms, permission(id, key, updated_ms))
}

pub fn permission_deleted(id: &str, event_ms: i64) -> String {
    envelope(
        "permission.deleted",
        event_ms,
        json!({"object": "permission", "id": id, "deleted": true}),
    )
}

/// A Clerk role object granting `permissions` (`(id, key)` each); `description` is null, as
/// Clerk's spec allows.
pub fn role(id: &str, key: &str, updated_ms: i64, permissions: &[(&str, &str)]) -> Value {
    json!({
        "object": "role", "id": id, "name": format!("Role {key}"), "key": key, "description": null,
        "is_creator_eligible": key == "org:admin",
        "permissions": permissions.iter().map(|(id, key)| permission(id, key, T)).collect::<Vec<_>>(),
        "created_at": T, "updated_at": updated_ms
    })
}

pub fn role_event(kind: &str, id: &str, key: &str, updated_ms: i64, event_ms: i64, permissions: &[(&str, &str)]) -> String {
    envelope(&format!("role.{kind}"), event_ms, role(id, key, updated_ms, permissions))
}

/// `role.deleted` as Clerk's spec shows it: the id, and `slug: null`.
pub fn role_deleted(id: &str, event_ms: i64) -> String {
    envelope(
        "role.deleted",
        event_ms,
        json!({"object": "role", "id": id, "deleted": true, "slug": null}),
    )
}

/// A membership with `role` and the snapshot `permissions` Clerk sent with it.
pub fn membership_with(id: &str, org_id: &str, user_id: &str, updated_ms: i64, role: &str, permissions: &[&str]) -> String {
    let mut data = membership(id, org_id, user_id, updated_ms, role);
    data["permissions"] = json!(permissions);
    envelope("organizationMembership.created", updated_ms, data)
}

/// A Clerk organization domain of `org_id`, its affiliation verified or not (`status`: `None`
/// for `verification: null`), as the webhooks send it (the deprecated `verification` field).
pub fn domain(id: &str, org_id: &str, name: &str, status: Option<&str>, updated_ms: i64) -> Value {
    json!({
        "object": "organization_domain", "id": id, "organization_id": org_id, "name": name,
        "enrollment_mode": "automatic_invitation", "affiliation_email_address": format!("admin@{name}"),
        "verification": status.map(|s| json!({"status": s, "strategy": "email_code", "attempts": 1, "expire_at": null})),
        "total_pending_invitations": 0, "total_pending_suggestions": 0,
        "public_organization_data": {"id": org_id, "name": "Org", "slug": format!("slug-{org_id}"), "has_image": false},
        "created_at": T, "updated_at": updated_ms
    })
}

pub fn domain_event(kind: &str, id: &str, org_id: &str, name: &str, status: Option<&str>, updated_ms: i64) -> String {
    envelope(&format!("organizationDomain.{kind}"), updated_ms, domain(id, org_id, name, status, updated_ms))
}

/// `organizationDomain.deleted`: the domain's id only.
pub fn domain_deleted(id: &str, event_ms: i64) -> String {
    envelope(
        "organizationDomain.deleted",
        event_ms,
        json!({"object": "organization_domain", "id": id, "deleted": true}),
    )
}

/// An organization invitation as Clerk sends it; its acceptance URL carries the token
/// `tkn_{id}` (see `token_traces`).
pub fn invitation(id: &str, org_id: &str, email: &str, status: &str, expires_ms: Option<i64>, updated_ms: i64) -> Value {
    json!({
        "object": "organization_invitation", "id": id, "email_address": email, "role": "org:member",
        "role_name": "Member", "organization_id": org_id, "inviter_id": null, "public_inviter_data": null,
        "status": status, "public_metadata": {"team": "blue"}, "private_metadata": null,
        "url": format!("https://accounts.example.com/v1/tickets/accept?ticket=tkn_{id}"),
        "expires_at": expires_ms, "created_at": T, "updated_at": updated_ms,
        // The spec nests the organization's data (and, in some payloads, a copy of the URL) here.
        "data": {"public_organization_data": {"id": org_id, "name": "Org", "slug": format!("slug-{org_id}"),
                 "image_url": "https://img.example.com/o.png", "has_image": false},
                 "url": format!("https://accounts.example.com/accept?__clerk_ticket=tkn_{id}")}
    })
}

/// `organizationInvitation.{kind}` (`created`, `accepted`, `revoked`) with the status it implies.
pub fn invitation_event(kind: &str, id: &str, org_id: &str, email: &str, expires_ms: Option<i64>, updated_ms: i64) -> String {
    let status = match kind {
        "created" => "pending",
        other => other,
    };
    let mut data = invitation(id, org_id, email, status, expires_ms, updated_ms);
    if kind == "accepted" {
        data["user_id"] = json!(format!("user_of_{id}"));
    }
    envelope(&format!("organizationInvitation.{kind}"), updated_ms, data)
}

/// Rows of the inbox, the invitations and the change log that hold an invitation token
/// (`tkn_`) anywhere: in a body, a column or a change's state.
pub async fn token_traces(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM inbox WHERE position('tkn_'::bytea IN coalesce(body, ''::bytea)) > 0)
              + (SELECT count(*) FROM invitations i WHERE strpos(to_jsonb(i)::text, 'tkn_') > 0)
              + (SELECT count(*) FROM changes c WHERE strpos(to_jsonb(c)::text, 'tkn_') > 0)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A Clerk Billing subscription item as `subscriptionItem.*` sends it: paid by the organization
/// `org_id` when it is non-empty, else by `user_id` (Clerk sends `""` for the absent one).
pub fn subscription_item(id: &str, status: &str, org_id: &str, user_id: &str, updated_ms: i64) -> Value {
    json!({
        "object": "commerce_subscription_item", "id": id, "status": status, "is_free_trial": false,
        "created_at": T, "updated_at": updated_ms, "period_start": T, "period_end": T + 3650 * 86_400_000i64,
        "interval": "month", "plan_id": "cplan_pro",
        "plan": {"id": "cplan_pro", "slug": "pro", "name": "Pro", "is_recurring": true, "amount": 2000, "currency": "usd"},
        "payer": {"object": "commerce_payer", "id": "cpayer_1", "organization_id": org_id, "user_id": user_id,
                  "first_name": "", "last_name": "", "image_url": "", "email": "billing@example.com"},
        "subscription_id": "csub_1", "seats": {"quantity": null},
    })
}

/// A plan as the Backend API lists it (`GET /billing/plans`): for `payer_type` (`org` or `user`),
/// with `features` (slugs), costing `fee` cents a month.
pub fn plan(id: &str, slug: &str, payer_type: &str, features: &[&str], is_default: bool, fee: i64) -> Value {
    let money = |amount: i64| json!({"amount": amount, "amount_formatted": format!("{}.{:02}", amount / 100, amount % 100),
                                     "currency": "USD", "currency_symbol": "$"});
    json!({
        "object": "commerce_plan", "id": id, "name": slug.to_uppercase(), "slug": slug, "description": null,
        "product_id": "cprod_1", "is_default": is_default, "is_recurring": true, "publicly_visible": true,
        "has_base_fee": fee > 0, "for_payer_type": payer_type, "avatar_url": null, "free_trial_enabled": false,
        "free_trial_days": null, "fee": money(fee), "annual_fee": money(fee * 10), "annual_monthly_fee": money(fee * 10 / 12),
        "features": features.iter().enumerate().map(|(i, f)| json!({"object": "feature", "id": format!("feat_{i}_{f}"),
            "name": f, "description": null, "slug": f, "avatar_url": null})).collect::<Vec<_>>(),
    })
}

/// `subscription.<kind>` of the subscription `id` paid by `org_id`, carrying `items` (each
/// `(id, status, updated_ms)`) as Clerk does: with null `payer` and `subscription_id`.
pub fn subscription_event(kind: &str, id: &str, org_id: &str, items: &[(&str, &str, i64)], event_ms: i64) -> String {
    let items: Vec<Value> = items
        .iter()
        .map(|(item, status, updated_ms)| {
            let mut i = subscription_item(item, status, org_id, "", *updated_ms);
            i["payer"] = Value::Null;
            i["subscription_id"] = Value::Null;
            i
        })
        .collect();
    envelope(
        &format!("subscription.{kind}"),
        event_ms,
        json!({
            "object": "commerce_subscription", "id": id, "status": "active", "created_at": T, "updated_at": event_ms,
            "active_at": T, "canceled_at": null, "ended_at": null, "past_due_at": null, "latest_payment_id": null,
            "payer_id": "cpayer_1", "payment_source_id": null,
            "payer": {"object": "commerce_payer", "id": "cpayer_1", "organization_id": org_id, "user_id": "",
                      "first_name": "", "last_name": "", "image_url": ""},
            "items": items,
        }),
    )
}

/// `subscriptionItem.<kind>` (e.g. `active`, `canceled`, `pastDue`) of [`subscription_item`].
pub fn subscription_item_event(kind: &str, id: &str, status: &str, org_id: &str, user_id: &str, updated_ms: i64) -> String {
    envelope(
        &format!("subscriptionItem.{kind}"),
        updated_ms,
        subscription_item(id, status, org_id, user_id, updated_ms),
    )
}
