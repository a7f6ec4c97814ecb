//! Realistic Clerk objects and event bodies for the benchmarks, made from the shapes in
//! `examples/events/`: users of 1–5 KB, organizations, memberships, each with distinct ids.

use std::sync::LazyLock;

use serde_json::{Value, json};

/// The instance every benchmark event comes from.
pub const INSTANCE: &str = "ins_2xBenchInstance000000000000";

/// 2026-01-01T00:00:00Z in ms: objects are created from here on, 1 ms apart.
pub const T0: i64 = 1_767_225_600_000;

fn template(text: &str) -> Value {
    serde_json::from_str::<Value>(text).expect("the example events are JSON")["data"].clone()
}

static USER: LazyLock<Value> = LazyLock::new(|| template(include_str!("../../../examples/events/user.created.json")));
static ORGANIZATION: LazyLock<Value> =
    LazyLock::new(|| template(include_str!("../../../examples/events/organization.created.json")));
static MEMBERSHIP: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../../examples/events/organizationMembership.created.json"
    ))
});

pub fn user_id(i: u64) -> String {
    format!("user_bench{i:020}")
}

pub fn email(i: u64) -> String {
    format!("person{i}@bench.example")
}

pub fn organization_id(i: u64) -> String {
    format!("org_bench{i:020}")
}

pub fn membership_id(i: u64) -> String {
    format!("orgmem_bench{i:020}")
}

/// A small pseudo-random number from `i` (the same every run).
pub fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// User `i`, padded (with a `public_metadata.profile` string) to about `bytes` as an event.
pub fn user(i: u64, bytes: usize) -> Value {
    let mut u = USER.clone();
    let t = T0 + i as i64;
    u["id"] = json!(user_id(i));
    u["external_id"] = json!(format!("emp-{i}"));
    u["username"] = json!(format!("person{i}"));
    u["first_name"] = json!(format!("Person{}", i % 997));
    u["last_name"] = json!(format!("Bench{}", i % 1009));
    let email_id = format!("idn_benchemail{i:020}");
    u["primary_email_address_id"] = json!(email_id);
    let mut address = u["email_addresses"][0].clone();
    address["id"] = json!(email_id);
    address["email_address"] = json!(email(i));
    address["created_at"] = json!(t);
    address["updated_at"] = json!(t);
    u["email_addresses"] = json!([address]);
    if bytes < 2500 {
        u["phone_numbers"] = json!([]);
        u["primary_phone_number_id"] = Value::Null;
    } else {
        u["phone_numbers"][0]["id"] = json!(format!("idn_benchphone{i:020}"));
        u["phone_numbers"][0]["phone_number"] = json!(format!("+1555{:07}", i % 10_000_000));
        u["primary_phone_number_id"] = u["phone_numbers"][0]["id"].clone();
    }
    u["public_metadata"] = json!({"plan": (["free", "pro", "team"][(i % 3) as usize])});
    u["created_at"] = json!(t);
    u["updated_at"] = json!(t);
    let size = serde_json::to_vec(&event("user.created", &u, t)).map_or(0, |b| b.len());
    if size + 30 < bytes {
        u["public_metadata"]["profile"] = json!("x".repeat(bytes - size - 30));
    }
    u
}

/// The size of user `i`'s event: 1–5 KB, spread evenly.
pub fn user_size(i: u64) -> usize {
    1024 + (mix(i) % 4097) as usize
}

/// Organization `i`.
pub fn organization(i: u64) -> Value {
    let mut o = ORGANIZATION.clone();
    let t = T0 + i as i64;
    o["id"] = json!(organization_id(i));
    o["name"] = json!(format!("Bench Org {i}"));
    o["slug"] = json!(format!("bench-org-{i}"));
    o["public_metadata"] = json!({"plan": (["starter", "growth", "enterprise"][(i % 3) as usize])});
    o["created_by"] = json!(user_id(i));
    o["created_at"] = json!(t);
    o["updated_at"] = json!(t);
    o
}

/// The role key membership `i` names: every tenth is an admin.
pub fn membership_role(i: u64) -> &'static str {
    if i.is_multiple_of(10) {
        "org:admin"
    } else {
        "org:member"
    }
}

/// The instance's permissions, `(id, key)`: two of Clerk's system ones and three custom.
pub const PERMISSIONS: [(&str, &str); 5] = [
    ("perm_bench0sysmemberships", "org:sys_memberships:manage"),
    ("perm_bench1sysprofile", "org:sys_profile:manage"),
    ("perm_bench2invoicesmanage", "org:invoices:manage"),
    ("perm_bench3invoicesread", "org:invoices:read"),
    ("perm_bench4reportsread", "org:reports:read"),
];

/// The instance's roles, `(id, key, indexes into PERMISSIONS granted)`: the two keys the
/// memberships name, and one no membership holds.
pub const ROLES: [(&str, &str, &[usize]); 3] = [
    ("role_bench0admin", "org:admin", &[0, 1, 2, 3, 4]),
    ("role_bench1member", "org:member", &[3, 4]),
    ("role_bench2billing", "org:billing_manager", &[2, 3]),
];

/// Whether role `role_key` (one of `ROLES`) grants `permission_key`.
pub fn role_grants(role_key: &str, permission_key: &str) -> bool {
    ROLES
        .iter()
        .filter(|(_, key, _)| *key == role_key)
        .flat_map(|(_, _, granted)| granted.iter())
        .any(|&p| PERMISSIONS[p].1 == permission_key)
}

/// Permission `i` of `PERMISSIONS`, as Clerk sends it.
pub fn permission(i: usize) -> Value {
    let (id, key) = PERMISSIONS[i];
    json!({
        "object": "permission", "id": id, "name": format!("Name of {key}"), "key": key,
        "description": format!("Allows {key}"),
        "type": if key.starts_with("org:sys_") { "system" } else { "custom" },
        "created_at": T0, "updated_at": T0
    })
}

/// Role `i` of `ROLES`, with its permissions, as Clerk sends it.
pub fn role(i: usize) -> Value {
    let (id, key, granted) = ROLES[i];
    json!({
        "object": "role", "id": id, "name": format!("Role {key}"), "key": key, "description": null,
        "is_creator_eligible": key == "org:admin",
        "permissions": granted.iter().map(|&p| permission(p)).collect::<Vec<_>>(),
        "created_at": T0, "updated_at": T0
    })
}

/// Membership `i`: user `user` in organization `org`.
pub fn membership(i: u64, org: u64, user: u64) -> Value {
    let mut m = MEMBERSHIP.clone();
    let t = T0 + i as i64;
    m["id"] = json!(membership_id(i));
    m["role"] = json!(membership_role(i));
    m["organization"] = organization(org);
    m["public_user_data"]["user_id"] = json!(user_id(user));
    m["public_user_data"]["identifier"] = json!(email(user));
    m["public_user_data"]["username"] = json!(format!("person{user}"));
    m["created_at"] = json!(t);
    m["updated_at"] = json!(t);
    m
}

/// A Clerk event envelope around `data`.
pub fn event(kind: &str, data: &Value, timestamp: i64) -> Value {
    json!({
        "data": data,
        "event_attributes": {"http_request": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (bench)"}},
        "instance_id": INSTANCE,
        "object": "event",
        "timestamp": timestamp,
        "type": kind,
    })
}

/// The `user.created` body of user `i` (1–5 KB).
pub fn user_created(i: u64) -> Vec<u8> {
    serde_json::to_vec(&event("user.created", &user(i, user_size(i)), T0 + i as i64)).expect("serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_events_are_between_one_and_five_kilobytes_and_parse_as_users() {
        let sizes: Vec<usize> = (0..200).map(|i| user_created(i).len()).collect();
        assert!(sizes.iter().all(|s| (1024..=5200).contains(s)), "{sizes:?}");
        assert!(
            sizes.iter().any(|s| *s < 2000) && sizes.iter().any(|s| *s > 4500),
            "{sizes:?}"
        );
        let record = crate::store::UserRecord::from_clerk(user(7, 3000)).expect("a valid user");
        assert_eq!(record.id, user_id(7));
        assert!(crate::store::OrganizationRecord::from_clerk(organization(3)).is_ok());
        assert!(crate::store::MembershipRecord::from_clerk(membership(1, 3, 7)).is_ok());
    }

    #[test]
    fn roles_and_permissions_parse_and_grant_what_the_table_says() {
        for (i, (id, key)) in PERMISSIONS.iter().enumerate() {
            let p = crate::store::PermissionRecord::from_clerk(permission(i)).expect("a valid permission");
            assert_eq!((p.id.as_str(), p.key.as_deref()), (*id, Some(*key)));
        }
        for (i, (id, key, granted)) in ROLES.iter().enumerate() {
            let r = crate::store::RoleRecord::from_clerk(role(i)).expect("a valid role");
            assert_eq!((r.id.as_str(), r.key.as_deref()), (*id, Some(*key)));
            assert_eq!(r.permission_ids.len(), granted.len());
        }
        assert!(role_grants("org:admin", "org:invoices:manage"));
        assert!(role_grants("org:member", "org:reports:read"));
        assert!(!role_grants("org:member", "org:invoices:manage"));
        assert!(!role_grants("org:unknown", "org:reports:read"));
        assert_eq!((membership_role(0), membership_role(7)), ("org:admin", "org:member"));
    }
}

/// The organization plans: the default (`basic`), Pro (`sso` too) and Team (`audit` too).
pub const PLANS: [(&str, &[&str], bool); 3] = [
    ("cplan_bench_free", &["basic"], true),
    ("cplan_bench_pro", &["basic", "sso"], false),
    ("cplan_bench_team", &["basic", "sso", "audit"], false),
];

/// One organization in this many pays for Pro or Team (a subscription item of its own); the
/// others are on the default plan.
pub const PAYING_EVERY: u64 = 10;

/// Plan `i` of [`PLANS`], as the Backend API lists it.
pub fn plan(i: usize) -> Value {
    let (id, features, is_default) = PLANS[i];
    json!({
        "object": "commerce_plan", "id": id, "name": id, "slug": id, "for_payer_type": "org",
        "is_default": is_default, "is_recurring": true, "publicly_visible": true,
        "fee": {"amount": 1000 * i as i64, "amount_formatted": "", "currency": "USD", "currency_symbol": "$"},
        "features": features.iter().map(|f| json!({"object": "feature", "id": format!("feat_{f}"), "slug": f})).collect::<Vec<_>>(),
    })
}

/// The plan organization `org` pays for, if it pays (Pro and Team in turn).
pub fn paid_plan(org: u64) -> Option<usize> {
    (org % PAYING_EVERY == 0).then_some(1 + (org / PAYING_EVERY % 2) as usize)
}

/// The active subscription item of paying organization `org` on plan `plan`.
pub fn subscription_item(org: u64, plan: usize) -> Value {
    json!({
        "object": "commerce_subscription_item", "id": format!("csub_item_bench{org:020}"), "status": "active",
        "plan_id": PLANS[plan].0, "plan": {"id": PLANS[plan].0, "slug": PLANS[plan].0}, "interval": "month",
        "is_free_trial": false, "period_start": T0, "period_end": null, "subscription_id": format!("csub_bench{org:020}"),
        "payer": {"id": format!("cpayer_bench{org:020}"), "organization_id": organization_id(org), "user_id": ""},
        "created_at": T0, "updated_at": T0 + org as i64,
    })
}
