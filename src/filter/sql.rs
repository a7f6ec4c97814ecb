//! A checked filter as a SQL condition on table alias `t`: values are always bound as
//! parameters, never spliced; strings compare by code point (`COLLATE "C"`), wildcards with
//! `starts_with`/`right`/`strpos`, so a user's `%` and `_` are never patterns.

use super::{Bind, Check, Literal, Node, Op, Pattern, literal_json};

/// The condition of `root`, with its parameters numbered from `first`.
pub(super) fn to_sql(root: &Node, first: usize) -> (String, Vec<Bind>) {
    let mut sql = Sql {
        binds: Vec::new(),
        first,
    };
    let text = sql.node(root);
    (text, sql.binds)
}

/// The SQL being written: the parameters bound so far, numbered from `first`.
struct Sql {
    binds: Vec<Bind>,
    first: usize,
}

/// The SQL operator of a comparison (`:` on a scalar is `=`).
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
            Check::FoldedMatch {
                column,
                negate,
                pattern,
            } => {
                // lower() under the "C" collation folds A-Z only, as to_ascii_lowercase does.
                let m = self.pattern(&format!("lower(coalesce(t.{column}, '') COLLATE \"C\")"), pattern);
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
