//! Resource names (AIP-122): `users/{id}`, `organizations/{id}`,
//! `organizations/{organization_id}/memberships/{id}`, `organizations/{organization_id}/invitations/{id}`,
//! `roles/{id}`, `plans/{id}`; Clerk ids verbatim.

use super::error::ApiError;

use crate::store::records::is_valid_id;

/// The id segment of `name`: a valid id by the rule every stored id obeys.
fn id<'a>(field: &str, name: &'a str, segment: &'a str) -> Result<&'a str, ApiError> {
    if !is_valid_id(segment) {
        return Err(ApiError::invalid(
            field,
            "INVALID_NAME",
            format!("`{}` has no valid id", truncate(name)),
        ));
    }
    Ok(segment)
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    }
}

/// The id in `{collection}/{id}`.
fn top_level_id<'a>(field: &str, name: &'a str, collection: &str) -> Result<&'a str, ApiError> {
    match name.strip_prefix(collection).and_then(|rest| rest.strip_prefix('/')) {
        Some(rest) => id(field, name, rest),
        None => Err(ApiError::invalid(
            field,
            "INVALID_NAME",
            format!("expected `{collection}/{{id}}`, got `{}`", truncate(name)),
        )),
    }
}

/// The id in `destinations/{id}`.
pub fn destination_id<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    top_level_id(field, name, "destinations")
}

/// The id in `users/{id}`.
pub fn user_id<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    top_level_id(field, name, "users")
}

/// The id in `organizations/{id}`.
pub fn organization_id<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    top_level_id(field, name, "organizations")
}

/// A payer: `organizations/{id}` or `users/{id}`, checked and returned as given.
pub fn payer<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    match (name.strip_prefix("organizations/"), name.strip_prefix("users/")) {
        (Some(rest), _) | (_, Some(rest)) => id(field, name, rest).map(|_| name),
        _ => Err(ApiError::invalid(
            field,
            "INVALID_NAME",
            format!("expected `organizations/{{id}}` or `users/{{id}}`, got `{}`", truncate(name)),
        )),
    }
}

/// The id in `plans/{id}`.
pub fn plan_id<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    top_level_id(field, name, "plans")
}

/// The id in `roles/{id}`.
pub fn role_id<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    top_level_id(field, name, "roles")
}

/// The organization id and membership id in `organizations/{org}/memberships/{id}`.
pub fn membership_ids<'a>(field: &str, name: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    child_ids(field, name, "memberships")
}

/// The organization id and invitation id in `organizations/{org}/invitations/{id}`.
pub fn invitation_ids<'a>(field: &str, name: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    child_ids(field, name, "invitations")
}

/// The organization id and child id in `organizations/{org}/{collection}/{id}`.
fn child_ids<'a>(field: &str, name: &'a str, collection: &str) -> Result<(&'a str, &'a str), ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            "INVALID_NAME",
            format!(
                "expected `organizations/{{organization_id}}/{collection}/{{id}}`, got `{}`",
                truncate(name)
            ),
        )
    };
    let rest = name.strip_prefix("organizations/").ok_or_else(bad)?;
    let (org, child) = rest.split_once(&format!("/{collection}/")).ok_or_else(bad)?;
    Ok((id(field, name, org)?, id(field, name, child)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_malformed_ones_are_rejected() {
        assert_eq!(user_id("name", "users/user_1").unwrap(), "user_1");
        assert_eq!(
            membership_ids("name", "organizations/org_1/memberships/orgmem_1").unwrap(),
            ("org_1", "orgmem_1")
        );
        for bad in ["user_1", "users/", "users/a/b", "users/a b", "organizations/x"] {
            assert!(user_id("name", bad).is_err(), "{bad}");
        }
        assert!(organization_id("name", "organizations/").is_err());
        assert_eq!(role_id("name", "roles/role_1").unwrap(), "role_1");
        assert!(role_id("name", "permissions/perm_1").is_err());
        assert!(membership_ids("name", "organizations/org_1/memberships/").is_err());
        assert!(membership_ids("name", "organizations//memberships/m").is_err());
        assert_eq!(
            invitation_ids("name", "organizations/org_1/invitations/orginv_1").unwrap(),
            ("org_1", "orginv_1")
        );
        assert!(invitation_ids("name", "organizations/org_1/memberships/orginv_1").is_err());
    }
}
