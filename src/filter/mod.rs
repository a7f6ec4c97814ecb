//! One filter language for lists and watches (AIP-160's grammar, in `parse`). A filter is parsed
//! once, checked against the fields of one entity type, and then either translated to SQL with
//! bound parameters (lists) or evaluated in memory on a record's JSON state (watches); both give
//! the same answer. Strings compare by code point (`COLLATE "C"`), wildcards with
//! `starts_with`/`right`/`strpos` (a user's `%` and `_` are never patterns), and `email` folds
//! ASCII letters only, on both sides, whatever the database's collation.
//!
//! This file holds what the parts share: the checked tree ([`Filter`], its comparisons) and the
//! parameters of its SQL ([`Bind`]). The parts: `parse.rs` (the grammar), `check.rs` (a parsed
//! filter checked against an entity type's fields: the errors a caller sees), `sql.rs` (to SQL),
//! `eval.rs` (in memory).

mod check;
mod eval;
pub mod parse;
pub mod selection;
mod sql;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use parse::{Expr, FilterError, Literal, Op};

use crate::store::EntityType;

/// A string compared for equality: exactly, or with a wildcard at its start and/or end.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    text: String,
    /// `"*x"`: ends with `text`.
    leading: bool,
    /// `"x*"`: starts with `text`.
    trailing: bool,
}

impl Pattern {
    /// The pattern of a string literal (`None` for other literals).
    fn of(value: &Literal) -> Option<Pattern> {
        match value {
            Literal::String(s) => Some(Pattern {
                text: s.clone(),
                leading: false,
                trailing: false,
            }),
            Literal::Wildcard {
                value,
                leading,
                trailing,
            } => Some(Pattern {
                text: value.clone(),
                leading: *leading,
                trailing: *trailing,
            }),
            _ => None,
        }
    }

    /// As `email` compares: ASCII letters folded to lower case, nothing else.
    fn ascii_folded(mut self) -> Pattern {
        self.text.make_ascii_lowercase();
        self
    }

    fn matches(&self, s: &str) -> bool {
        match (self.leading, self.trailing) {
            (false, false) => s == self.text,
            (false, true) => s.starts_with(&self.text),
            (true, false) => s.ends_with(&self.text),
            (true, true) => s.contains(&self.text),
        }
    }
}

/// One checked comparison.
#[derive(Debug, Clone, PartialEq)]
enum Check {
    /// `column op value`; `None` value: `= null` / `!= null`; `Any`: `:*`.
    Text {
        column: &'static str,
        op: Op,
        value: Option<String>,
        any: bool,
    },
    Bool {
        column: &'static str,
        op: Op,
        value: bool,
    },
    Int {
        column: &'static str,
        op: Op,
        value: f64,
    },
    Time {
        column: &'static str,
        op: Op,
        value: Option<DateTime<Utc>>,
        any: bool,
    },
    List {
        column: &'static str,
        value: Option<String>,
    },
    /// `=` / `!=` (`negate`) on a text column with a wildcard.
    TextMatch {
        column: &'static str,
        negate: bool,
        pattern: Pattern,
    },
    /// `=` / `!=` (`negate`) on a text column with ASCII letters folded on both sides (the
    /// pattern is folded when checked).
    FoldedMatch {
        column: &'static str,
        negate: bool,
        pattern: Pattern,
    },
    /// Any of the user's addresses matches (ASCII-folded on both sides).
    Email {
        pattern: Pattern,
    },
    /// `data #> {root, path…} op value`.
    Json {
        root: &'static str,
        path: Vec<String>,
        op: Op,
        value: Literal,
    },
    /// `=` / `!=` (`negate`) on a metadata string with a wildcard.
    JsonMatch {
        root: &'static str,
        path: Vec<String>,
        negate: bool,
        pattern: Pattern,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Check(Check),
}

/// A parsed, checked filter for one entity type.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    entity: EntityType,
    root: Node,
    text: String,
}

impl Filter {
    /// Parses and checks `text` for `entity`; a blank filter is `None` (everything matches).
    pub fn parse(entity: EntityType, text: &str) -> Result<Option<Filter>, FilterError> {
        let Some(expr) = parse::parse(text)? else {
            return Ok(None);
        };
        Ok(Some(Filter {
            entity,
            root: check::lower(entity, &expr)?,
            text: text.to_string(),
        }))
    }

    pub fn entity(&self) -> EntityType {
        self.entity
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The filter as a SQL condition on table alias `t`, with its parameters numbered from
    /// `first_param`. Values are always bound, never spliced.
    pub fn to_sql(&self, first_param: usize) -> (String, Vec<Bind>) {
        sql::to_sql(&self.root, first_param)
    }

    /// Whether a record's JSON state (as stored in the change log) matches.
    pub fn matches(&self, state: &Value) -> bool {
        eval::eval(&self.root, state)
    }
}

/// A bound parameter of a filter's SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Float(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    TextArray(Vec<String>),
    Json(Value),
}

/// A literal as the JSON value it compares with.
fn literal_json(value: &Literal) -> Value {
    match value {
        Literal::String(s) => Value::String(s.clone()),
        Literal::Number(n) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Wildcard { value, .. } => Value::String(value.clone()),
        Literal::Null | Literal::Any => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user_filter(text: &str) -> Result<Option<Filter>, FilterError> {
        Filter::parse(EntityType::User, text)
    }

    #[test]
    fn fields_are_checked_against_the_entity_type() {
        assert!(user_filter(r#"public_metadata.plan = "pro""#).unwrap().is_some());
        for (text, needle) in [
            (r#"role = "x""#, "unknown field `role`"),
            ("banned = \"yes\"", "boolean"),
            ("first_name = 3", "text"),
            (r#"create_time > "yesterday""#, "RFC 3339"),
            ("public_metadata = 1", "name a key"),
            ("first_name.x = \"a\"", "no sub-fields"),
            ("public_metadata.a < true", "order only"),
        ] {
            let e = user_filter(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        assert!(
            Filter::parse(EntityType::Membership, r#"permissions = "x""#)
                .unwrap_err()
                .message
                .contains("`:`")
        );
        assert!(Filter::parse(EntityType::Membership, r#"permissions:"x" AND role = "org:admin""#).is_ok());
    }

    #[test]
    fn in_memory_evaluation_follows_the_documented_semantics() {
        let state = json!({
            "id": "user_1", "first_name": "Ada", "external_id": null, "banned": false,
            "created_at": "2026-01-02T00:00:00Z",
            "data": {"public_metadata": {"plan": "pro", "n": 5, "tags": ["a", "b"], "nil": null},
                     "email_addresses": [{"email_address": "Ada@Example.com"}]}
        });
        let yes = |t: &str| assert!(user_filter(t).unwrap().unwrap().matches(&state), "{t}");
        let no = |t: &str| assert!(!user_filter(t).unwrap().unwrap().matches(&state), "{t}");
        yes(r#"public_metadata.plan = "pro""#);
        yes(r#"public_metadata.plan != "free""#);
        yes("public_metadata.n >= 5 AND public_metadata.n < 5.5");
        yes(r#"public_metadata.tags:"a""#);
        yes("public_metadata.tags:*");
        yes("public_metadata.nil = null");
        yes("public_metadata.absent = null");
        no("public_metadata.nil:*");
        no(r#"public_metadata.absent = "x""#);
        yes(r#"public_metadata.absent != "x""#);
        no("public_metadata.plan > 3");
        yes(r#"email = "ada@example.COM""#);
        yes("external_id = null");
        yes(r#"external_id = """#);
        no("external_id:*");
        yes(r#"first_name > "A" AND first_name < "B""#);
        yes(r#"create_time > "2026-01-01T00:00:00Z""#);
        no("banned = true");
        yes("NOT banned = true");
        yes(r#"first_name = "x" OR first_name = "Ada""#);
    }

    #[test]
    fn wildcards_match_ends_only_and_other_stars_percent_and_underscore_are_literal() {
        let state = json!({
            "first_name": "50%_off*", "last_name": null,
            "data": {"public_metadata": {"plan": "pro-annual", "n": 5},
                     "email_addresses": [{"email_address": "Ada@Example.COM"}, {"email_address": "ÉVA@example.org"}]}
        });
        let yes = |t: &str| assert!(user_filter(t).unwrap().unwrap().matches(&state), "{t}");
        let no = |t: &str| assert!(!user_filter(t).unwrap().unwrap().matches(&state), "{t}");
        yes(r#"first_name = "50*""#);
        yes(r#"first_name = "*off\*""#);
        yes(r#"first_name = "*%_*""#);
        yes(r#"first_name:"50*""#);
        no(r#"first_name = "5_*""#);
        no(r#"first_name = "*%off*""#);
        yes(r#"first_name = "50%_off\*""#);
        no(r#"first_name = "50%_off""#);
        no(r#"first_name = "50*off\*""#);
        no(r#"first_name != "50*""#);
        yes(r#"first_name != "60*""#);
        // An absent text field is "": `= "*"` matches it, `:*` asks for presence.
        yes(r#"last_name = "*""#);
        yes(r#"last_name = "**""#);
        no(r#"last_name = "*x*""#);
        yes(r#"last_name != "x*""#);
        no("last_name:*");
        // Metadata: a wildcard matches strings only; `!=` is its negation (true when absent).
        yes(r#"public_metadata.plan = "pro*""#);
        yes(r#"public_metadata.plan = "*annual""#);
        yes(r#"public_metadata.plan = "*""#);
        no(r#"public_metadata.n = "*""#);
        no(r#"public_metadata.absent = "*""#);
        yes(r#"public_metadata.absent != "*""#);
        no(r#"public_metadata.plan != "*-annual""#);
        yes(r#"public_metadata:"plan""#);
        no(r#"public_metadata:"absent""#);
        // email folds ASCII letters only.
        yes(r#"email = "*@example.com""#);
        yes(r#"email:"ADA@*""#);
        yes(r#"email = "ÉVA@EXAMPLE.ORG""#);
        no(r#"email = "éva@example.org""#);
        no(r#"email = "*@example""#);
        yes(r#"email = "*""#);
    }

    #[test]
    fn a_wildcard_where_no_string_equality_takes_one_is_refused_with_the_escape_to_use() {
        for (entity, text, position, needle) in [
            (EntityType::User, r#"first_name > "A*""#, 13, "write `\\*`"),
            (EntityType::User, r#"public_metadata.tags:"b*""#, 21, "wildcard"),
            (EntityType::User, r#"public_metadata.n < "*1""#, 20, "wildcard"),
            (EntityType::User, r#"create_time = "2026*""#, 14, "`create_time:*`"),
            (EntityType::Membership, r#"permissions:"org:*""#, 12, "whole strings"),
            (EntityType::User, r#"email != "*@x.com""#, 0, "use = or :"),
        ] {
            let e = Filter::parse(entity, text).unwrap_err();
            assert_eq!(e.position, position, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
        // Escaped, the same stars are literals and the filters are fine.
        for text in [
            r#"first_name > "A\*""#,
            r#"public_metadata.tags:"b\*""#,
            r#"first_name = "\*""#,
        ] {
            assert!(user_filter(text).is_ok(), "{text}");
        }
    }
}
