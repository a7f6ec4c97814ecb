//! Which raw Clerk event types a destination may select (`event_types`), and whether a type is
//! selected. A selection names a type (`session.created`) or every type under a prefix
//! (`session.*`). Never selectable: `email.*` and `sms.*` (one-time codes and sign-in links),
//! invitations (their bodies carry the invitee's email and the invitation's URL), and the
//! types the mirror projects (their changes are sent instead, by entity type).

use crate::store::kind::APPLIED_TYPES;

/// Most event types one destination selects.
pub const MAX_EVENT_TYPES: usize = 64;

/// Why a type cannot be selected, said to the caller.
pub fn check(selection: &str) -> Result<(), String> {
    let (prefix, wildcard) = match selection.strip_suffix(".*") {
        Some(prefix) => (prefix, true),
        None => (selection, false),
    };
    let word = |w: &str| {
        w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && w.chars().all(|c| c.is_ascii_alphanumeric())
    };
    let parts: Vec<&str> = prefix.split('.').collect();
    if selection.len() > 100 || !parts.iter().all(|p| word(p)) || (!wildcard && parts.len() < 2) {
        return Err(format!(
            "`{selection}` is not a Clerk event type (e.g. `session.created`) or a prefix (`session.*`)"
        ));
    }
    let first = parts[0].to_ascii_lowercase();
    if first == "email" || first == "sms" || selection.to_ascii_lowercase().contains("invitation") {
        return Err(format!(
            "`{selection}` is never delivered: email.*, sms.* and invitation bodies carry one-time codes, \
             sign-in links or invitees' addresses"
        ));
    }
    let projected: Vec<&str> = APPLIED_TYPES
        .iter()
        .copied()
        .filter(|t| match wildcard {
            true => t.starts_with(&format!("{prefix}.")),
            false => *t == selection,
        })
        .collect();
    if let Some(t) = projected.first() {
        return Err(format!(
            "`{t}` is projected by the mirror: select its changes with `entity_types` instead"
        ));
    }
    Ok(())
}

/// Whether `event_type` is selected by any of `selections` (each already [`check`]ed; a type
/// that may never be delivered is never selected, whatever the selections say).
pub fn selected(selections: &[String], event_type: &str) -> bool {
    selections.iter().any(|s| match s.strip_suffix(".*") {
        Some(prefix) => event_type.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')),
        None => s == event_type,
    }) && check(event_type).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprojected_types_and_prefixes_are_selectable_and_select_what_they_name() {
        for ok in ["session.created", "session.*", "waitlistEntry.created", "commerce.thing.happened"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        let s = vec!["session.*".to_string(), "waitlistEntry.created".to_string()];
        assert!(selected(&s, "session.created") && selected(&s, "session.ended"));
        assert!(selected(&s, "waitlistEntry.created"));
        assert!(!selected(&s, "waitlistEntry.updated") && !selected(&s, "sessionx.created"));
    }

    #[test]
    fn secrets_bearing_and_projected_types_and_malformed_names_are_refused_with_why() {
        for (refused, says) in [
            ("email.created", "never delivered"),
            ("email.*", "never delivered"),
            ("sms.created", "never delivered"),
            ("organizationInvitation.created", "never delivered"),
            ("organizationInvitation.*", "never delivered"),
            ("user.created", "projected"),
            ("user.*", "projected"),
            ("organizationMembership.*", "projected"),
            ("session", "not a Clerk event type"),
            ("*", "not a Clerk event type"),
            ("session.cre ated", "not a Clerk event type"),
            ("", "not a Clerk event type"),
        ] {
            let why = check(refused).expect_err(refused);
            assert!(why.contains(says), "{refused}: {why}");
        }
        assert!(!selected(&["email.*".to_string()], "email.created"), "never, even if stored");
    }
}
