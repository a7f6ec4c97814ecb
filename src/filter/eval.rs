//! A checked filter evaluated in memory on a record's JSON state (as the change log stores
//! it), giving the same answer as its SQL.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Check, Literal, Node, Op, Pattern, literal_json};

/// `a op b` for an ordered value (`:` on a scalar is `=`).
fn ordered<T: PartialOrd>(a: &T, op: Op, b: &T) -> bool {
    match op {
        Op::Eq | Op::Has => a == b,
        Op::Ne => a != b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
    }
}

/// The value at `path` in `v` (array elements by index, as PostgreSQL's `#>` does).
fn at_path<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for key in path {
        v = match v {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// JSON equality as PostgreSQL's jsonb has it (numbers by value).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Whether a record's JSON state matches the checked tree `node`.
pub(super) fn eval(node: &Node, state: &Value) -> bool {
    match node {
        Node::And(a, b) => eval(a, state) && eval(b, state),
        Node::Or(a, b) => eval(a, state) || eval(b, state),
        Node::Not(a) => !eval(a, state),
        Node::Check(c) => eval_check(c, state),
    }
}

/// One comparison on a record's JSON state, as its SQL would answer.
fn eval_check(c: &Check, state: &Value) -> bool {
    let text = |column: &str| state.get(column).and_then(Value::as_str);
    let time = |column: &str| {
        text(column)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    match c {
        Check::Text { column, any: true, .. } => !text(column).unwrap_or("").is_empty(),
        Check::Text {
            column,
            op,
            value: None,
            ..
        } => text(column).is_none() != (*op == Op::Ne),
        Check::Text {
            column,
            op,
            value: Some(v),
            ..
        } => ordered(&text(column).unwrap_or(""), *op, &v.as_str()),
        Check::Bool { column, op, value } => state
            .get(*column)
            .and_then(Value::as_bool)
            .is_some_and(|b| ordered(&b, *op, value)),
        Check::Int { column, op, value } => state
            .get(*column)
            .and_then(Value::as_f64)
            .is_some_and(|n| ordered(&n, *op, value)),
        Check::Time { column, any: true, .. } => time(column).is_some(),
        Check::Time {
            column,
            op,
            value: None,
            ..
        } => time(column).is_none() != (*op == Op::Ne),
        Check::Time {
            column,
            op,
            value: Some(v),
            ..
        } => time(column).is_some_and(|t| ordered(&t, *op, v)),
        Check::List { column, value } => eval_list(state, column, value.as_deref()),
        Check::TextMatch {
            column,
            negate,
            pattern,
        } => pattern.matches(text(column).unwrap_or("")) != *negate,
        Check::FoldedMatch {
            column,
            negate,
            pattern,
        } => pattern.matches(&text(column).unwrap_or("").to_ascii_lowercase()) != *negate,
        Check::Email { pattern } => eval_email(state, pattern),
        Check::JsonMatch {
            root,
            path,
            negate,
            pattern,
        } => {
            metadata_at(state, root, path)
                .and_then(Value::as_str)
                .is_some_and(|s| pattern.matches(s))
                != *negate
        }
        Check::Json { root, path, op, value } => eval_json(metadata_at(state, root, path), *op, value),
    }
}

/// A list of strings: not empty (`value` `None`), or holding `value`.
fn eval_list(state: &Value, column: &str, value: Option<&str>) -> bool {
    let items: Vec<&str> = state
        .get(column)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match value {
        None => !items.is_empty(),
        Some(v) => items.contains(&v),
    }
}

/// Any of the user's addresses, ASCII-folded, matches `pattern` (folded when checked).
fn eval_email(state: &Value, pattern: &Pattern) -> bool {
    state
        .get("data")
        .and_then(|d| d.get("email_addresses"))
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .filter_map(|e| e.get("email_address").and_then(Value::as_str))
                .any(|a| pattern.matches(&a.to_ascii_lowercase()))
        })
}

/// The value at `root.path…` of the record's data, if there is one.
fn metadata_at<'a>(state: &'a Value, root: &str, path: &[String]) -> Option<&'a Value> {
    state
        .get("data")
        .and_then(|d| d.get(root))
        .and_then(|r| at_path(r, path))
}

/// A metadata value `x` (`None`: absent) against `op value`, as the SQL of `Sql::json`
/// answers.
fn eval_json(x: Option<&Value>, op: Op, value: &Literal) -> bool {
    match (op, value) {
        (Op::Has, Literal::Any) => x.is_some_and(|v| !v.is_null()),
        (Op::Eq, Literal::Null) => x.is_none_or(Value::is_null),
        (Op::Ne, Literal::Null) => !x.is_none_or(Value::is_null),
        (Op::Eq, v) => x.is_some_and(|x| json_eq(x, &literal_json(v))),
        (Op::Ne, v) => !x.is_some_and(|x| json_eq(x, &literal_json(v))),
        (Op::Has, v) => {
            let want = literal_json(v);
            x.is_some_and(|x| json_eq(x, &want) || x.as_array().is_some_and(|a| a.iter().any(|i| json_eq(i, &want))))
        }
        (op, Literal::Number(n)) => x.and_then(Value::as_f64).is_some_and(|f| ordered(&f, op, n)),
        (op, Literal::String(s)) => x.and_then(Value::as_str).is_some_and(|t| ordered(&t, op, &s.as_str())),
        _ => false,
    }
}
