//! One filter language for lists and watches (AIP-160's grammar, in `parse`). A filter is parsed
//! once, checked against the fields of one entity type, and then either translated to SQL with
//! bound parameters (lists) or evaluated in memory on a record's JSON state (watches); both give
//! the same answer. Strings compare by code point (`COLLATE "C"`), wildcards with
//! `starts_with`/`right`/`strpos` (a user's `%` and `_` are never patterns), and `email` folds
//! ASCII letters only, on both sides, whatever the database's collation.

pub mod parse;

use chrono::{DateTime, Utc};
use serde_json::Value;

pub use parse::{Expr, FilterError, Literal, Op};

use crate::store::fields::{Field, FieldType as Kind};
use crate::store::kind::with_kind;
use crate::store::{EntityType, Kind as _};

fn fields(entity: EntityType) -> &'static [Field] {
    with_kind!(entity, K => K::FIELDS)
}

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

fn bad<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Has => ":",
    }
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
                op_name(self.op)
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
                op_name(self.op),
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

fn lower(entity: EntityType, expr: &Expr) -> Result<Node, FilterError> {
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

impl Filter {
    /// Parses and checks `text` for `entity`; a blank filter is `None` (everything matches).
    pub fn parse(entity: EntityType, text: &str) -> Result<Option<Filter>, FilterError> {
        let Some(expr) = parse::parse(text)? else {
            return Ok(None);
        };
        Ok(Some(Filter {
            entity,
            root: lower(entity, &expr)?,
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
        let mut sql = Sql {
            binds: Vec::new(),
            first: first_param,
        };
        let text = sql.node(&self.root);
        (text, sql.binds)
    }

    /// Whether a record's JSON state (as stored in the change log) matches.
    pub fn matches(&self, state: &Value) -> bool {
        eval(&self.root, state)
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

struct Sql {
    binds: Vec<Bind>,
    first: usize,
}

fn sql_op(op: Op) -> &'static str {
    match op {
        Op::Eq | Op::Has => "=",
        Op::Ne => "<>",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

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

impl Sql {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.first + self.binds.len() - 1)
    }

    /// `x` (a text expression) against `p`, by code point whatever the column's collation;
    /// the bound text is never a LIKE pattern, so `%` and `_` are themselves.
    fn pattern(&mut self, x: &str, p: &Pattern) -> String {
        if (p.leading || p.trailing) && p.text.is_empty() {
            return "true".into();
        }
        let v = self.bind(Bind::Text(p.text.clone()));
        match (p.leading, p.trailing) {
            (false, false) => format!("{x} COLLATE \"C\" = {v}::text COLLATE \"C\""),
            (false, true) => format!("starts_with({x} COLLATE \"C\", {v}::text)"),
            (true, false) => format!("right({x}, length({v}::text)) COLLATE \"C\" = {v}::text COLLATE \"C\""),
            (true, true) => format!("strpos({x} COLLATE \"C\", {v}::text) > 0"),
        }
    }

    fn node(&mut self, node: &Node) -> String {
        match node {
            Node::And(a, b) => format!("({} AND {})", self.node(a), self.node(b)),
            Node::Or(a, b) => format!("({} OR {})", self.node(a), self.node(b)),
            Node::Not(a) => format!("(NOT {})", self.node(a)),
            // Every comparison is two-valued (never NULL), so NOT means what it says.
            Node::Check(c) => format!("coalesce({}, false)", self.check(c)),
        }
    }

    /// One comparison as a SQL condition (NULL is possible: the caller coalesces it).
    fn check(&mut self, c: &Check) -> String {
        match c {
            Check::Text { column, any: true, .. } => format!("coalesce(t.{column}, '') <> ''"),
            Check::Time { column, any: true, .. } => format!("t.{column} IS NOT NULL"),
            Check::Text {
                column,
                op,
                value: None,
                ..
            }
            | Check::Time {
                column,
                op,
                value: None,
                ..
            } => {
                format!("t.{column} IS {}NULL", if *op == Op::Ne { "NOT " } else { "" })
            }
            Check::Text {
                column,
                op,
                value: Some(v),
                ..
            } => {
                let p = self.bind(Bind::Text(v.clone()));
                format!(
                    "coalesce(t.{column}, '') COLLATE \"C\" {} {p}::text COLLATE \"C\"",
                    sql_op(*op)
                )
            }
            Check::Bool { column, op, value } => {
                let p = self.bind(Bind::Bool(*value));
                format!("t.{column} {} {p}::boolean", sql_op(*op))
            }
            Check::Int { column, op, value } => {
                let p = self.bind(Bind::Float(*value));
                format!("t.{column}::float8 {} {p}::float8", sql_op(*op))
            }
            Check::Time {
                column,
                op,
                value: Some(v),
                ..
            } => {
                let p = self.bind(Bind::Time(*v));
                format!("t.{column} {} {p}::timestamptz", sql_op(*op))
            }
            Check::List { column, value: None } => format!("cardinality(t.{column}) > 0"),
            Check::List { column, value: Some(v) } => {
                let p = self.bind(Bind::Text(v.clone()));
                format!("{p}::text = ANY(t.{column})")
            }
            Check::TextMatch {
                column,
                negate,
                pattern,
            } => {
                let m = self.pattern(&format!("coalesce(t.{column}, '')"), pattern);
                if *negate { format!("NOT ({m})") } else { m }
            }
            Check::Email { pattern } => self.email(pattern),
            Check::JsonMatch {
                root,
                path,
                negate,
                pattern,
            } => self.json_match(root, path, *negate, pattern),
            Check::Json { root, path, op, value } => self.json(root, path, *op, value),
        }
    }

    /// Any of the user's addresses, ASCII-folded, matches `pattern` (folded when checked).
    fn email(&mut self, pattern: &Pattern) -> String {
        // lower() under the "C" collation folds A-Z only, as to_ascii_lowercase does;
        // the pattern was folded before it was bound.
        let m = self.pattern("lower(e.email_address COLLATE \"C\")", pattern);
        format!("EXISTS (SELECT 1 FROM user_email_addresses e WHERE e.user_id = t.id AND {m})")
    }

    /// The jsonb at `root.path…` of the record's data, its path bound as a parameter.
    fn json_at(&mut self, root: &str, path: &[String]) -> String {
        let mut full = vec![root.to_string()];
        full.extend(path.iter().cloned());
        let p = self.bind(Bind::TextArray(full));
        format!("(t.data #> {p}::text[])")
    }

    /// A metadata string matches `pattern` (`negate`: it does not, or is no string).
    fn json_match(&mut self, root: &str, path: &[String], negate: bool, pattern: &Pattern) -> String {
        let x = self.json_at(root, path);
        let m = self.pattern(&format!("({x} #>> '{{}}')"), pattern);
        let hit = format!("coalesce(jsonb_typeof({x}) = 'string' AND {m}, false)");
        if negate { format!("NOT {hit}") } else { hit }
    }

    /// A metadata value: set (`:*`), null or equal (`=`, `!=`), equal or an array holding it
    /// (`:`), or ordered against a number or string of the same JSON type.
    fn json(&mut self, root: &str, path: &[String], op: Op, value: &Literal) -> String {
        let x = self.json_at(root, path);
        match (op, value) {
            (Op::Has, Literal::Any) => format!("({x} IS NOT NULL AND {x} <> 'null'::jsonb)"),
            (Op::Eq | Op::Ne, Literal::Null) => {
                let eq = format!("({x} IS NULL OR {x} = 'null'::jsonb)");
                if op == Op::Ne { format!("NOT {eq}") } else { eq }
            }
            (Op::Eq | Op::Ne, v) => {
                let j = self.bind(Bind::Json(literal_json(v)));
                let eq = format!("coalesce({x} = {j}::jsonb, false)");
                if op == Op::Ne { format!("NOT {eq}") } else { eq }
            }
            (Op::Has, v) => {
                let j = self.bind(Bind::Json(literal_json(v)));
                format!("({x} = {j}::jsonb OR (jsonb_typeof({x}) = 'array' AND {x} @> jsonb_build_array({j}::jsonb)))")
            }
            (op, Literal::Number(n)) => {
                let p = self.bind(Bind::Float(*n));
                format!(
                    "(jsonb_typeof({x}) = 'number' AND {x}::float8 {} {p}::float8)",
                    sql_op(op)
                )
            }
            (op, v) => {
                let s = match v {
                    Literal::String(s) => s.clone(),
                    _ => String::new(),
                };
                let p = self.bind(Bind::Text(s));
                format!(
                    "(jsonb_typeof({x}) = 'string' AND ({x} #>> '{{}}') COLLATE \"C\" {} {p}::text COLLATE \"C\")",
                    sql_op(op)
                )
            }
        }
    }
}

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

fn eval(node: &Node, state: &Value) -> bool {
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

/// A metadata value `x` (`None`: absent) against `op value`, as the SQL of [`Sql::json`]
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
