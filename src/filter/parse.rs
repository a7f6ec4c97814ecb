//! The filter grammar (a subset of AIP-160), parsed once into an AST.
//!
//! ```text
//! filter     = expression ;
//! expression = term { "OR" term } ;
//! term       = factor { "AND" factor } ;
//! factor     = ( "NOT" | "-" ) factor | "(" expression ")" | comparison ;
//! comparison = path ( "=" | "!=" | "<" | "<=" | ">" | ">=" | ":" ) value ;
//! path       = name { "." ( name | string ) } ;      // e.g. public_metadata.plan
//! value      = string | number | "true" | "false" | "null" | "*" ;
//! string     = '"' { char | '\"' | '\\' | '\n' | '\t' | '\uXXXX' } '"'   (or single quotes) ;
//! ```
//! Keywords are upper case. At most `MAX_LENGTH` bytes and `MAX_DEPTH` levels of nesting.

/// Longest filter accepted, in bytes.
pub const MAX_LENGTH: usize = 2048;
/// Deepest nesting of parentheses and NOT.
pub const MAX_DEPTH: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `:` — has: presence with `*`, membership in a list, else equality.
    Has,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
    /// `*`, only after `:`.
    Any,
}

/// The parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare {
        path: Vec<String>,
        op: Op,
        value: Literal,
        position: usize,
    },
}

/// A filter that cannot be parsed, and where (byte offset).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at position {position})")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

fn error<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    Str(String),
    Num(f64),
    Op(Op),
    Dot,
    LParen,
    RParen,
    Minus,
    Star,
}

fn lex(input: &str) -> Result<Vec<(Token, usize)>, FilterError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((Token::LParen, start));
                i += 1
            }
            b')' => {
                out.push((Token::RParen, start));
                i += 1
            }
            b'.' => {
                out.push((Token::Dot, start));
                i += 1
            }
            b'*' => {
                out.push((Token::Star, start));
                i += 1
            }
            b':' => {
                out.push((Token::Op(Op::Has), start));
                i += 1
            }
            b'=' => {
                out.push((Token::Op(Op::Eq), start));
                i += 1
            }
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                out.push((Token::Op(Op::Ne), start));
                i += 2
            }
            b'<' | b'>' => {
                let eq = bytes.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                };
                out.push((Token::Op(op), start));
                i += if eq { 2 } else { 1 };
            }
            b'"' | b'\'' => {
                let (s, end) = string(input, i)?;
                out.push((Token::Str(s), start));
                i = end;
            }
            b'-' if !bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) => {
                out.push((Token::Minus, start));
                i += 1
            }
            b'-' | b'0'..=b'9' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_digit() || matches!(bytes[end], b'.' | b'e' | b'E' | b'+' | b'-'))
                {
                    // A '-' or '+' only right after an exponent marker.
                    if matches!(bytes[end], b'+' | b'-') && !matches!(bytes[end - 1], b'e' | b'E') {
                        break;
                    }
                    end += 1;
                }
                let text = &input[i..end];
                match text.parse::<f64>() {
                    Ok(n) if n.is_finite() => out.push((Token::Num(n), start)),
                    _ => return error(start, format!("`{text}` is not a number")),
                }
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i + 1;
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                    end += 1;
                }
                out.push((Token::Name(input[i..end].to_string()), start));
                i = end;
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                return error(start, format!("unexpected character `{ch}`"));
            }
        }
    }
    Ok(out)
}

/// A quoted string starting at `start`; returns it and the offset after the closing quote.
fn string(input: &str, start: usize) -> Result<(String, usize), FilterError> {
    let quote = input.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = input[start + 1..].char_indices();
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        match c {
            c if c == quote => return Ok((out, at + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 'u')) => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) if hex.len() == 4 => out.push(c),
                        _ => return error(at, "bad \\u escape (four hex digits)"),
                    }
                }
                Some((_, c)) if c == '\\' || c == '"' || c == '\'' => out.push(c),
                Some((_, c)) => return error(at, format!("unknown escape `\\{c}`")),
                None => return error(at, "unterminated string"),
            },
            c => out.push(c),
        }
    }
    error(start, "unterminated string")
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|t| &t.0)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map(|t| t.1).unwrap_or(self.end)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Name(n)) if n == word)
    }

    fn expression(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.term(depth)?;
        while self.keyword("OR") {
            self.at += 1;
            let right = self.term(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.factor(depth)?;
        while self.keyword("AND") {
            self.at += 1;
            let right = self.factor(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return error(self.position(), format!("nested deeper than {MAX_DEPTH} levels"));
        }
        if self.keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.factor(depth + 1)?)));
        }
        if self.peek() == Some(&Token::LParen) {
            let open = self.position();
            self.at += 1;
            let inner = self.expression(depth + 1)?;
            if self.peek() != Some(&Token::RParen) {
                return error(
                    self.position(),
                    format!("expected `)` to close the `(` at position {open}"),
                );
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let position = self.position();
        let mut path = match self.peek() {
            Some(Token::Name(n)) if !matches!(n.as_str(), "AND" | "OR" | "NOT") => vec![n.clone()],
            Some(_) => return error(position, "expected a field name"),
            None => return error(position, "expected a comparison, found the end"),
        };
        self.at += 1;
        while self.peek() == Some(&Token::Dot) {
            self.at += 1;
            match self.peek() {
                Some(Token::Name(n)) | Some(Token::Str(n)) => path.push(n.clone()),
                _ => return error(self.position(), "expected a field name after `.`"),
            }
            self.at += 1;
        }
        let op = match self.peek() {
            Some(Token::Op(op)) => *op,
            _ => return error(self.position(), "expected an operator (=, !=, <, <=, >, >=, :)"),
        };
        self.at += 1;
        let value_at = self.position();
        let value = match self.peek() {
            Some(Token::Str(s)) => Literal::String(s.clone()),
            Some(Token::Num(n)) => Literal::Number(*n),
            Some(Token::Name(n)) if n == "true" => Literal::Bool(true),
            Some(Token::Name(n)) if n == "false" => Literal::Bool(false),
            Some(Token::Name(n)) if n == "null" => Literal::Null,
            Some(Token::Star) if op == Op::Has => Literal::Any,
            Some(Token::Star) => return error(value_at, "`*` is only allowed after `:`"),
            Some(Token::Name(n)) => return error(value_at, format!("`{n}` is not a value: quote strings")),
            _ => return error(value_at, "expected a value"),
        };
        self.at += 1;
        Ok(Expr::Compare {
            path,
            op,
            value,
            position,
        })
    }
}

/// Parses `input`; an empty or blank filter is `None` (everything matches).
pub fn parse(input: &str) -> Result<Option<Expr>, FilterError> {
    if input.len() > MAX_LENGTH {
        return error(MAX_LENGTH, format!("longer than {MAX_LENGTH} bytes"));
    }
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        end: input.len(),
    };
    let expr = parser.expression(0)?;
    if parser.at < parser.tokens.len() {
        return error(
            parser.position(),
            "unexpected input after a complete expression (join terms with AND or OR)",
        );
    }
    Ok(Some(expr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_filters_parse() {
        for f in [
            r#"public_metadata.plan = "pro""#,
            r#"role = "org:admin""#,
            "banned = true",
            r#"create_time > "2026-01-01T00:00:00Z""#,
            r#"a = 1 AND b != 2 OR NOT c < 3"#,
            r#"(a = 1 OR b = 2) AND -c:*"#,
            r#"x.y."weird key" >= -1.5e3"#,
            r#"name = 'single \' quoted'"#,
            r#"s = "\u00e9\n\t\\""#,
            "a:*",
            "   ",
            "",
        ] {
            assert!(parse(f).is_ok(), "{f}: {:?}", parse(f));
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = parse("a = 1 OR b = 2 AND c = 3").unwrap().unwrap();
        assert!(
            matches!(e, Expr::Or(_, ref right) if matches!(**right, Expr::And(..))),
            "{e:?}"
        );
    }

    #[test]
    fn invalid_filters_say_where() {
        for (f, position) in [
            ("a =", 3),
            ("= 1", 0),
            ("a = 1 b = 2", 6),
            ("(a = 1", 6),
            ("a = 1)", 5),
            ("a == 1", 3),
            (r#"a = "open"#, 4),
            ("a = pro", 4),
            ("a = *", 4),
            ("a # 1", 2),
            ("a = 1 AND", 9),
            (r#"a = "\q""#, 5),
            ("a. = 1", 3),
            ("a = 1e999", 4),
        ] {
            let e = parse(f).unwrap_err();
            assert_eq!(e.position, position, "{f}: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let nots = format!("{}a = 1", "NOT ".repeat(40));
        assert!(parse(&nots).is_err());
        let long = format!("a = \"{}\"", "x".repeat(MAX_LENGTH));
        assert!(parse(&long).unwrap_err().message.contains("longer"));
    }
}
