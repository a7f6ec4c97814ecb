//! Checking a parsed filter against the fields of one entity type: each comparison's field,
//! operator and literal become a [`Check`], or are refused with the error the caller sees.

use chrono::{DateTime, Utc};

use super::parse::op_text;
use super::{Check, Expr, FilterError, Literal, Node, Op, Pattern};
use crate::store::fields::{Field, FieldType as Kind};
use crate::store::kind::with_kind;
use crate::store::{EntityType, Kind as _};

/// The fields a filter on `entity` may name.
fn fields(entity: EntityType) -> &'static [Field] {
    with_kind!(entity, K => K::FIELDS)
}

/// A refusal at `position` of the filter text.
fn bad<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

/// Checks one comparison, `path op value`, against the fields of `entity`: the field must
/// exist, take sub-fields only if it is metadata, and take this operator and literal.
fn check(
    entity: EntityType,
    path: &[String],
    op: Op,
    value: &Literal,
    at: usize,
    value_at: usize,
) -> Result<Check, FilterError> {
    let name = &path[0];
    let field = field_named(entity, name, at)?;
    if field.kind != Kind::Json && path.len() > 1 {
        return bad(at, format!("`{name}` has no sub-fields"));
    }
    refuse_nul(value, at)?;
    let c = Comparison {
        name,
        column: field.column,
        op,
        value,
        at,
        value_at,
    };
    match field.kind {
        Kind::Text => c.text(),
        Kind::Bool => c.boolean(),
        Kind::Int => c.number(),
        Kind::Time => c.time(),
        Kind::TextList => c.list(),
        Kind::Email => c.email(),
        Kind::FoldedText => c.folded_text(),
        Kind::Json => c.metadata(&path[1..]),
    }
}

/// The field `name` of `entity`, or an error that lists the fields it has.
fn field_named(entity: EntityType, name: &str, at: usize) -> Result<&'static Field, FilterError> {
    match fields(entity).iter().find(|f| f.name == name) {
        Some(field) => Ok(field),
        None => {
            let known: Vec<&str> = fields(entity).iter().map(|f| f.name).collect();
            bad(
                at,
                format!(
                    "unknown field `{name}` for {}s; known: {}",
                    entity.as_str(),
                    known.join(", ")
                ),
            )
        }
    }
}

/// Refuses a string literal that contains NUL (PostgreSQL's text cannot hold one).
fn refuse_nul(value: &Literal, at: usize) -> Result<(), FilterError> {
    if let Literal::String(s) | Literal::Wildcard { value: s, .. } = value
        && s.contains('\0')
    {
        return bad(at, "strings cannot contain NUL");
    }
    Ok(())
}

/// One comparison being checked against the type of its field: what it names and compares,
/// where it stands in the filter, and the two refusals every field type shares.
struct Comparison<'a> {
    name: &'a str,
    column: &'static str,
    op: Op,
    value: &'a Literal,
    /// Where the comparison starts.
    at: usize,
    /// Where its value starts.
    value_at: usize,
}

impl Comparison<'_> {
    /// Refuses a wildcard where no string equality takes one, rather than reading it as a
    /// literal `*`.
    fn no_wildcard<T>(&self, why: &str) -> Result<T, FilterError> {
        bad(
            self.value_at,
            format!(
                "a `*` at the start or end of a string is a wildcard, which `{} {}` does not take ({why}); \
                 write `\\*` for a literal `*`",
                self.name,
                op_text(self.op)
            ),
        )
    }

    /// Refuses an operator or literal the field's type (`what`) does not take.
    fn wrong<T>(&self, what: &str) -> Result<T, FilterError> {
        bad(
            self.at,
            format!(
                "`{}` is {what}: `{} {:?}` does not apply",
                self.name,
                op_text(self.op),
                self.value
            ),
        )
    }

    /// The value as a pattern (the caller has matched a string or wildcard literal).
    fn pattern(&self) -> Pattern {
        Pattern::of(self.value).expect("a string or wildcard literal")
    }

    /// A text column: set (`:*`), `= null` / `!= null`, a wildcard (`=`, `!=`, `:`), or a
    /// whole string in any order (`:` meaning `=`).
    fn text(&self) -> Result<Check, FilterError> {
        let (column, op) = (self.column, self.op);
        Ok(match self.value {
            Literal::Any => Check::Text {
                column,
                op,
                value: None,
                any: true,
            },
            Literal::Null if matches!(op, Op::Eq | Op::Ne) => Check::Text {
                column,
                op,
                value: None,
                any: false,
            },
            Literal::Wildcard { .. } if matches!(op, Op::Eq | Op::Ne | Op::Has) => Check::TextMatch {
                column,
                negate: op == Op::Ne,
                pattern: self.pattern(),
            },
            Literal::Wildcard { .. } => {
                return self.no_wildcard("only = and != do; an order compares whole strings");
            }
            Literal::String(s) => Check::Text {
                column,
                op: if op == Op::Has { Op::Eq } else { op },
                value: Some(s.clone()),
                any: false,
            },
            _ => return self.wrong("text (quote the value)"),
        })
    }

    /// A boolean column: `=`, `!=` or `:` (meaning `=`) with `true` or `false`.
    fn boolean(&self) -> Result<Check, FilterError> {
        match self.value {
            Literal::Bool(b) if matches!(self.op, Op::Eq | Op::Ne | Op::Has) => Ok(Check::Bool {
                column: self.column,
                op: if self.op == Op::Ne { Op::Ne } else { Op::Eq },
                value: *b,
            }),
            _ => self.wrong("a boolean (= true, = false)"),
        }
    }

    /// A numeric column: a number in any order but `:`.
    fn number(&self) -> Result<Check, FilterError> {
        match self.value {
            Literal::Number(n) if self.op != Op::Has => Ok(Check::Int {
                column: self.column,
                op: self.op,
                value: *n,
            }),
            _ => self.wrong("a number"),
        }
    }

    /// A time column: set (`:*`), `= null` / `!= null`, or an RFC 3339 string in any order
    /// but `:`.
    fn time(&self) -> Result<Check, FilterError> {
        let (column, op, name) = (self.column, self.op, self.name);
        Ok(match self.value {
            Literal::Any => Check::Time {
                column,
                op,
                value: None,
                any: true,
            },
            Literal::Null if matches!(op, Op::Eq | Op::Ne) => Check::Time {
                column,
                op,
                value: None,
                any: false,
            },
            Literal::Wildcard { .. } => {
                return bad(
                    self.value_at,
                    format!("`{name}` is a time: wildcards apply to text; `{name}:*` asks whether it is set"),
                );
            }
            Literal::String(s) if op != Op::Has => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Check::Time {
                    column,
                    op,
                    value: Some(t.with_timezone(&Utc)),
                    any: false,
                },
                Err(_) => {
                    return bad(
                        self.at,
                        format!("`{name}` is a time: use RFC 3339, e.g. \"2026-01-01T00:00:00Z\""),
                    );
                }
            },
            _ => return self.wrong("a time (an RFC 3339 string)"),
        })
    }

    /// A list of strings: `:*` (not empty) or `:` with a whole string (a member).
    fn list(&self) -> Result<Check, FilterError> {
        let column = self.column;
        match self.value {
            Literal::Any if self.op == Op::Has => Ok(Check::List { column, value: None }),
            Literal::Wildcard { .. } => self.no_wildcard("list membership compares whole strings"),
            Literal::String(s) if self.op == Op::Has => Ok(Check::List {
                column,
                value: Some(s.clone()),
            }),
            _ => self.wrong("a list: use `:` (has)"),
        }
    }

    /// Any of a user's email addresses: `=` or `:` with a string or wildcard, ASCII-folded.
    fn email(&self) -> Result<Check, FilterError> {
        match self.value {
            Literal::String(_) | Literal::Wildcard { .. } if matches!(self.op, Op::Eq | Op::Has) => Ok(Check::Email {
                pattern: self.pattern().ascii_folded(),
            }),
            _ => self.wrong("any of the user's email addresses: use = or : with a string"),
        }
    }

    /// Text compared with ASCII letters folded: set (`:*`), or `=`, `!=` or `:` (meaning `=`)
    /// with a string or wildcard.
    fn folded_text(&self) -> Result<Check, FilterError> {
        let column = self.column;
        match self.value {
            Literal::Any if self.op == Op::Has => Ok(Check::Text {
                column,
                op: Op::Has,
                value: None,
                any: true,
            }),
            Literal::String(_) | Literal::Wildcard { .. } if matches!(self.op, Op::Eq | Op::Ne | Op::Has) => {
                Ok(Check::FoldedMatch {
                    column,
                    negate: self.op == Op::Ne,
                    pattern: self.pattern().ascii_folded(),
                })
            }
            _ => self.wrong("text compared case-insensitively: use =, != or : with a string"),
        }
    }

    /// A metadata object followed by `path` into it: a wildcard with `=` / `!=`, an order with
    /// a string or number, and any other literal with `=`, `!=` or `:`; with no path, only
    /// `m:"key"`.
    fn metadata(&self, path: &[String]) -> Result<Check, FilterError> {
        if path.is_empty() {
            return self.metadata_key();
        }
        let (root, op, value) = (self.column, self.op, self.value);
        match (op, value) {
            (Op::Eq | Op::Ne, Literal::Wildcard { .. }) => {
                return Ok(Check::JsonMatch {
                    root,
                    path: path.to_vec(),
                    negate: op == Op::Ne,
                    pattern: self.pattern(),
                });
            }
            (_, Literal::Wildcard { .. }) => return self.no_wildcard("only = and != do"),
            (Op::Lt | Op::Le | Op::Gt | Op::Ge, Literal::String(_) | Literal::Number(_)) => {}
            (Op::Lt | Op::Le | Op::Gt | Op::Ge, _) => return self.wrong("metadata: order only strings and numbers"),
            (Op::Eq | Op::Ne, Literal::Any) => return self.wrong("metadata"),
            _ => {}
        }
        Ok(Check::Json {
            root,
            path: path.to_vec(),
            op,
            value: value.clone(),
        })
    }

    /// A metadata object named without a path: AIP-160's `m:"key"`, the map has the key (as
    /// `m.key:*`); anything else asks for a key.
    fn metadata_key(&self) -> Result<Check, FilterError> {
        if let (Op::Has, Literal::String(key)) = (self.op, self.value) {
            return Ok(Check::Json {
                root: self.column,
                path: vec![key.clone()],
                op: Op::Has,
                value: Literal::Any,
            });
        }
        let name = self.name;
        bad(
            self.at,
            format!("name a key inside `{name}`, e.g. `{name}.plan`, or ask for one with `{name}:\"plan\"`"),
        )
    }
}

/// The checked tree of a parsed filter for `entity`: every comparison checked.
pub(super) fn lower(entity: EntityType, expr: &Expr) -> Result<Node, FilterError> {
    Ok(match expr {
        Expr::And(a, b) => Node::And(Box::new(lower(entity, a)?), Box::new(lower(entity, b)?)),
        Expr::Or(a, b) => Node::Or(Box::new(lower(entity, a)?), Box::new(lower(entity, b)?)),
        Expr::Not(a) => Node::Not(Box::new(lower(entity, a)?)),
        Expr::Compare {
            path,
            op,
            value,
            position,
            value_position,
        } => Node::Check(check(entity, path, *op, value, *position, *value_position)?),
    })
}
