//! The filter grammar (AIP-160's, without functions and free text), parsed once into an AST.
//!
//! ```text
//! filter     = [ expression ] ;
//! expression = sequence { "AND" sequence } ;
//! sequence   = factor { factor } ;                  // juxtaposition is AND
//! factor     = term { "OR" term } ;                 // so OR binds tighter than AND
//! term       = ( "NOT" | "-" ) term | "(" expression ")" | comparison ;
//! comparison = path ( "=" | "!=" | "<" | "<=" | ">" | ">=" | ":" ) value ;
//! path       = name { "." ( name | string ) } ;      // e.g. public_metadata.plan
//! value      = string | number | "true" | "false" | "null" | "*" ;
//! string     = '"' … '"' | "'" … "'" ;               // escapes: see `string`
//! ```
//! As in AIP-160, `a OR b AND c` is `(a OR b) AND c` and `a b` is `a AND b`. Keywords are upper
//! case. A bare word (free text, or an unquoted value) is refused with a hint to quote it. At most
//! `MAX_LENGTH` bytes and `MAX_DEPTH` levels of nesting.

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
    /// A quoted string with no wildcard.
    String(String),
    /// A quoted string that began (`leading`) and/or ended (`trailing`) with an unescaped `*`;
    /// `value` is the string without those two stars.
    Wildcard {
        value: String,
        leading: bool,
        trailing: bool,
    },
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
        /// Byte offsets of the path and of the value.
        position: usize,
        value_position: usize,
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
    /// A quoted string, decoded, and whether its first / last character is an unescaped `*`.
    Str {
        text: String,
        leading: bool,
        trailing: bool,
    },
    Num(f64),
    Op(Op),
    Dot,
    LParen,
    RParen,
    Minus,
    Star,
    /// A character no token starts with; the parser refuses it where it stands.
    Other(char),
}

/// A token and its byte range in the input.
#[derive(Debug, Clone, PartialEq)]
struct Lexed {
    token: Token,
    start: usize,
    end: usize,
}

fn lex(input: &str) -> Result<Vec<Lexed>, FilterError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = |token| Some((token, 1));
        let lexed = match c {
            b' ' | b'\t' | b'\n' | b'\r' => None,
            b'(' => single(Token::LParen),
            b')' => single(Token::RParen),
            b'.' => single(Token::Dot),
            b'*' => single(Token::Star),
            b':' => single(Token::Op(Op::Has)),
            b'=' => single(Token::Op(Op::Eq)),
            b'!' if bytes.get(i + 1) == Some(&b'=') => Some((Token::Op(Op::Ne), 2)),
            b'<' | b'>' => {
                let eq = bytes.get(i + 1) == Some(&b'=');
                let op = match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                };
                Some((Token::Op(op), if eq { 2 } else { 1 }))
            }
            b'"' | b'\'' => {
                let (token, end) = string(input, i)?;
                Some((token, end - i))
            }
            b'-' if !bytes.get(i + 1).is_some_and(|b| b.is_ascii_digit()) => single(Token::Minus),
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
                    Ok(n) if n.is_finite() => Some((Token::Num(n), end - i)),
                    _ => return error(start, format!("`{text}` is not a number")),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut end = i + 1;
                while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                    end += 1;
                }
                Some((Token::Name(input[i..end].to_string()), end - i))
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                Some((Token::Other(ch), ch.len_utf8()))
            }
        };
        match lexed {
            Some((token, len)) => {
                out.push(Lexed {
                    token,
                    start,
                    end: start + len,
                });
                i += len;
            }
            None => i += 1,
        }
    }
    Ok(out)
}

/// A quoted string starting at `start`; returns its token and the offset after the closing quote.
///
/// Escapes are einride/aip-go's (`filtering/unescape.go`, from cel-go and GoogleSQL): `\a \b \f
/// \n \r \t \v \\ \' \" \` \?`, `\xHH` and `\XHH` (code point U+00HH), `\uHHHH`, `\UHHHHHHHH`
/// and octal `\[0-3][0-7][0-7]` (a code point), plus `\*`, a literal `*` that is never a
/// wildcard. Any other escape is refused; a raw CR LF or CR in a string reads as LF.
fn string(input: &str, start: usize) -> Result<(Token, usize), FilterError> {
    let quote = input.as_bytes()[start] as char;
    let mut out = Decoded::default();
    let mut chars = input[start + 1..].char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        match c {
            c if c == quote => {
                // A lone `*` is leading only: it matches any string.
                let token = Token::Str {
                    trailing: out.last_raw_star && out.count >= 2,
                    leading: out.leading,
                    text: out.text,
                };
                return Ok((token, at + 1));
            }
            '\r' => {
                if chars.peek().is_some_and(|&(_, n)| n == '\n') {
                    chars.next();
                }
                out.push('\n', false);
            }
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return error(at, "unterminated string");
                };
                let mut hex = |n: usize| -> Option<char> {
                    let digits: String = (0..n).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    if digits.len() != n || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32)
                };
                let decoded = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' | '\'' | '"' | '`' | '?' | '*' => Some(e),
                    'x' | 'X' => match hex(2) {
                        Some(c) => Some(c),
                        None => return error(at, "bad \\x escape (two hex digits)"),
                    },
                    'u' => match hex(4) {
                        Some(c) => Some(c),
                        None => return error(at, "bad \\u escape (four hex digits, not a surrogate)"),
                    },
                    'U' => match hex(8) {
                        Some(c) => Some(c),
                        None => return error(at, "bad \\U escape (eight hex digits, a Unicode code point)"),
                    },
                    '0'..='3' => {
                        let rest: String = (0..2).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                        let digits = format!("{e}{rest}");
                        match u32::from_str_radix(&digits, 8).ok().and_then(char::from_u32) {
                            Some(c) if digits.len() == 3 => Some(c),
                            _ => return error(at, "bad octal escape (three digits, \\000 to \\377)"),
                        }
                    }
                    _ => None,
                };
                match decoded {
                    Some(c) => out.push(c, false),
                    None => return error(at, format!("unknown escape `\\{e}`")),
                }
            }
            c => out.push(c, c == '*'),
        }
    }
    error(start, "unterminated string")
}

/// A string as it is decoded, and whether its first / latest character was an unescaped `*`.
#[derive(Default)]
struct Decoded {
    text: String,
    count: usize,
    leading: bool,
    last_raw_star: bool,
}

impl Decoded {
    fn push(&mut self, c: char, raw_star: bool) {
        if self.count == 0 {
            self.leading = raw_star;
        }
        self.count += 1;
        self.last_raw_star = raw_star;
        self.text.push(c);
    }
}

fn is_keyword(name: &str) -> bool {
    matches!(name, "AND" | "OR" | "NOT")
}

/// The operator as a filter writes it.
pub(super) fn op_text(op: Op) -> &'static str {
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

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Lexed>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.peek_at(self.at)
    }

    fn peek_at(&self, i: usize) -> Option<&Token> {
        self.tokens.get(i).map(|t| &t.token)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map(|t| t.start).unwrap_or(self.input.len())
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Name(n)) if n == word)
    }

    /// An error at the current token, naming a stray character when that is what stands there.
    fn expected<T>(&self, what: &str) -> Result<T, FilterError> {
        match self.peek() {
            Some(Token::Other(c)) => error(self.position(), format!("unexpected character `{c}`")),
            Some(_) => error(self.position(), format!("expected {what}")),
            None => error(self.position(), format!("expected {what}, found the end")),
        }
    }

    fn expression(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.sequence(depth)?;
        while self.keyword("AND") {
            self.at += 1;
            let right = self.sequence(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// Factors side by side: an implicit AND.
    fn sequence(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.factor(depth)?;
        while self.peek().is_some() && self.peek() != Some(&Token::RParen) && !self.keyword("AND") {
            let right = self.factor(depth)?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut left = self.term(depth)?;
        while self.keyword("OR") {
            self.at += 1;
            let right = self.term(depth)?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return error(self.position(), format!("nested deeper than {MAX_DEPTH} levels"));
        }
        if self.keyword("NOT") || self.peek() == Some(&Token::Minus) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.term(depth + 1)?)));
        }
        if self.peek() == Some(&Token::LParen) {
            let open = self.position();
            self.at += 1;
            let inner = self.expression(depth + 1)?;
            if self.peek() != Some(&Token::RParen) {
                return self.expected(&format!("`)` to close the `(` at position {open}"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.comparison()
    }

    /// `path op value`: a field (with its dotted path), an operator and one value.
    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let position = self.position();
        let path = self.field_path(position)?;
        let op = self.operator(position)?;
        let op_at = self.position();
        self.at += 1;
        let value_position = self.position();
        let value = self.value(op, position, op_at)?;
        self.at += 1;
        Ok(Expr::Compare {
            path,
            op,
            value,
            position,
            value_position,
        })
    }

    /// The field a comparison starting at `position` names, and the path into it after dots
    /// (names or quoted strings); a keyword in the wrong case is refused with the right one.
    fn field_path(&mut self, position: usize) -> Result<Vec<String>, FilterError> {
        let first = match self.peek() {
            Some(Token::Name(n)) if !is_keyword(n) => n.clone(),
            Some(Token::Name(n)) => return error(position, format!("expected a comparison before `{n}`")),
            _ => return self.expected("a field name"),
        };
        let next_is_op = matches!(self.peek_at(self.at + 1), Some(Token::Op(_) | Token::Dot));
        if !next_is_op && is_keyword(&first.to_ascii_uppercase()) {
            return error(
                position,
                format!(
                    "`{first}` is not an operator: write `{}` (AND, OR and NOT are upper case)",
                    first.to_ascii_uppercase()
                ),
            );
        }
        let mut path = vec![first];
        self.at += 1;
        while self.peek() == Some(&Token::Dot) {
            self.at += 1;
            match self.peek() {
                Some(Token::Name(n)) => path.push(n.clone()),
                Some(Token::Str { text, .. }) => path.push(text.clone()),
                _ => return self.expected("a field name after `.`"),
            }
            self.at += 1;
        }
        Ok(path)
    }

    /// The operator after the field that starts at `position`; a call (`word(…)`) or a word
    /// standing alone (free text) is refused with what to write instead.
    fn operator(&self, position: usize) -> Result<Op, FilterError> {
        match self.peek() {
            Some(Token::Op(op)) => Ok(*op),
            Some(Token::Other(_)) => self.expected("an operator"),
            Some(Token::LParen) => {
                let word = &self.input[position..self.tokens[self.at - 1].end];
                error(
                    position,
                    format!("`{word}(…)`: this service defines no filter functions; compare a field with an operator"),
                )
            }
            _ => {
                let word = &self.input[position..self.tokens[self.at - 1].end];
                error(
                    position,
                    format!(
                        "`{word}` stands alone: this service has no free-text search; compare a field \
                         (e.g. `first_name = \"{word}\"`) and quote values"
                    ),
                )
            }
        }
    }

    /// The value after `op` (at `op_at`, in the comparison that starts at `position`): a string
    /// or wildcard, a number, `true`, `false`, `null`, or `*` after `:`. What is no value is
    /// refused with the likely intent (`==`, a list, a keyword's case, a missing quote).
    fn value(&self, op: Op, position: usize, op_at: usize) -> Result<Literal, FilterError> {
        let value_position = self.position();
        Ok(match self.peek() {
            Some(Token::Str {
                text,
                leading,
                trailing,
            }) => string_literal(text, *leading, *trailing),
            Some(Token::Num(n)) => Literal::Number(*n),
            Some(Token::Name(n)) if n == "true" => Literal::Bool(true),
            Some(Token::Name(n)) if n == "false" => Literal::Bool(false),
            Some(Token::Name(n)) if n == "null" => Literal::Null,
            Some(Token::Star) if op == Op::Has => Literal::Any,
            Some(Token::Op(Op::Eq)) if op == Op::Eq && value_position == op_at + 1 => {
                return error(value_position, "`==` is not an operator: write `=`");
            }
            Some(Token::LParen) => {
                return error(
                    value_position,
                    "a comparison takes one value, not `(…)`: write `(a = 1 OR a = 2)`",
                );
            }
            Some(Token::Name(n)) if is_keyword(n) => return self.expected("a value"),
            Some(Token::Name(n)) if matches!(n.to_ascii_lowercase().as_str(), "true" | "false" | "null") => {
                return error(
                    value_position,
                    format!(
                        "`{n}` is not a value: true, false and null are lower case (`{}`); quote a string",
                        n.to_ascii_lowercase()
                    ),
                );
            }
            Some(Token::Name(_) | Token::Other(_) | Token::Star | Token::Dot) => {
                return self.unquoted_value(op, position, op_at);
            }
            _ => return self.expected("a value (a quoted string, a number, true, false or null)"),
        })
    }

    /// Refuses an unquoted value, showing the comparison (field from `position` to the operator
    /// at `op_at`) with the value quoted.
    fn unquoted_value<T>(&self, op: Op, position: usize, op_at: usize) -> Result<T, FilterError> {
        let bare = self.bare_value();
        let field = self.input[position..op_at].trim_end();
        let quoted = bare.replace('\\', "\\\\");
        let hint = if bare.starts_with('*') || bare.ends_with('*') {
            " (a wildcard `*` goes inside the quotes)"
        } else {
            ""
        };
        error(
            self.position(),
            format!(
                "`{bare}` is not a value: quote it, `{field} {} \"{quoted}\"`{hint}",
                op_text(op)
            ),
        )
    }

    /// The unquoted text that starts at the current token: words and stray characters up to a
    /// keyword, a parenthesis, a quoted string, the end, or the path of the next comparison.
    fn bare_value(&self) -> &str {
        let first = &self.tokens[self.at];
        let mut end = first.end;
        let mut i = self.at + 1;
        while let Some(t) = self.tokens.get(i) {
            match &t.token {
                Token::Name(n) if is_keyword(n) => break,
                Token::Name(_) => {
                    // `Ada last_name = "x"`: `last_name` starts the next comparison.
                    let mut k = i;
                    while matches!(self.peek_at(k + 1), Some(Token::Dot))
                        && matches!(self.peek_at(k + 2), Some(Token::Name(_)))
                    {
                        k += 2;
                    }
                    if matches!(self.peek_at(k + 1), Some(Token::Op(_))) {
                        break;
                    }
                }
                Token::Num(_) | Token::Dot | Token::Other(_) | Token::Star | Token::Minus => {}
                _ => break,
            }
            end = t.end;
            i += 1;
        }
        &self.input[first.start..end]
    }
}

/// A quoted string token as a literal: a wildcard if its first and/or last character is an
/// unescaped `*` (dropped from the text), else the string itself.
fn string_literal(text: &str, leading: bool, trailing: bool) -> Literal {
    if !leading && !trailing {
        return Literal::String(text.to_string());
    }
    let mut chars = text.chars();
    if leading {
        chars.next();
    }
    if trailing {
        chars.next_back();
    }
    Literal::Wildcard {
        value: chars.as_str().to_string(),
        leading,
        trailing,
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
    let mut parser = Parser { input, tokens, at: 0 };
    let expr = parser.expression(0)?;
    if parser.at < parser.tokens.len() {
        // Only a `)` stops a sequence early.
        return error(parser.position(), "unmatched `)`");
    }
    Ok(Some(expr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as text: `(a AND b)`, `(a OR b)`, `NOT a`, a comparison by its first path key.
    fn shape(e: &Expr) -> String {
        match e {
            Expr::And(a, b) => format!("({} AND {})", shape(a), shape(b)),
            Expr::Or(a, b) => format!("({} OR {})", shape(a), shape(b)),
            Expr::Not(a) => format!("NOT {}", shape(a)),
            Expr::Compare { path, .. } => path[0].clone(),
        }
    }

    fn shape_of(f: &str) -> String {
        shape(&parse(f).unwrap_or_else(|e| panic!("{f}: {e}")).unwrap())
    }

    fn value_of(f: &str) -> Literal {
        match parse(f).unwrap_or_else(|e| panic!("{f}: {e}")).unwrap() {
            Expr::Compare { value, .. } => value,
            e => panic!("{f}: not a comparison: {e:?}"),
        }
    }

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
            "a = 1 b = 2",
            "a:*",
            "   ",
            "",
        ] {
            assert!(parse(f).is_ok(), "{f}: {:?}", parse(f));
        }
    }

    #[test]
    fn or_binds_tighter_than_and_and_juxtaposition_is_and() {
        for (f, tree) in [
            ("a = 1 OR b = 2 AND c = 3", "((a OR b) AND c)"),
            ("a = 1 AND b = 2 OR c = 3", "(a AND (b OR c))"),
            ("a = 1 OR b = 2 AND c = 3 OR d = 4", "((a OR b) AND (c OR d))"),
            ("a = 1 b = 2", "(a AND b)"),
            ("a = 1 b = 2 OR c = 3", "(a AND (b OR c))"),
            ("a = 1 b = 2 AND c = 3 AND d = 4", "(((a AND b) AND c) AND d)"),
            ("(a = 1 b = 2) AND c = 3 AND d = 4", "(((a AND b) AND c) AND d)"),
            ("NOT a = 1 OR b = 2", "(NOT a OR b)"),
            ("NOT a = 1 b = 2", "(NOT a AND b)"),
            ("-a = 1 OR b = 2 c = 3", "((NOT a OR b) AND c)"),
            ("NOT (a = 1 OR b = 2)", "NOT (a OR b)"),
            ("a = 1 OR b = 2 OR c = 3", "((a OR b) OR c)"),
            ("NOT NOT a = 1", "NOT NOT a"),
        ] {
            assert_eq!(shape_of(f), tree, "{f}");
        }
    }

    #[test]
    fn a_star_at_either_end_of_a_string_is_a_wildcard_and_nowhere_else() {
        let w = |value: &str, leading, trailing| Literal::Wildcard {
            value: value.into(),
            leading,
            trailing,
        };
        for (f, literal) in [
            (r#"a = "Ada*""#, w("Ada", false, true)),
            (r#"a = "*@example.com""#, w("@example.com", true, false)),
            (r#"a = "*love*""#, w("love", true, true)),
            (r#"a = "*""#, w("", true, false)),
            (r#"a = "**""#, w("", true, true)),
            (r#"a = "***""#, w("*", true, true)),
            (r#"a = 'Ada*'"#, w("Ada", false, true)),
            // In the middle, or escaped, a star is itself.
            (r#"a = "Ada*Lovelace""#, Literal::String("Ada*Lovelace".into())),
            (r#"a = "\*Ada\*""#, Literal::String("*Ada*".into())),
            (r#"a = "\*""#, Literal::String("*".into())),
            (r#"a = "\**""#, w("*", false, true)),
            (r#"a = "*\*""#, w("*", true, false)),
            (r#"a = "50%_off""#, Literal::String("50%_off".into())),
            ("a:*", Literal::Any),
        ] {
            assert_eq!(value_of(f), literal, "{f}");
        }
    }

    /// einride/aip-go `filtering/unescape_test.go` (from cel-go), and our `\*`.
    #[test]
    fn strings_unescape_as_einride_aip_go_does() {
        for (quoted, decoded) in [
            (r#"'hello'"#, "hello"),
            (r#""""#, ""),
            (r#""\\\"""#, "\\\""),
            (r#""\\""#, "\\"),
            (r#""\303\277""#, "Ã¿"),
            (r#""\377""#, "ÿ"),
            (r#""\u263A\u263A""#, "☺☺"),
            (
                r#""\a\b\f\n\r\t\v\'\"\\\? Legal escapes""#,
                "\u{7}\u{8}\u{c}\n\r\t\u{b}'\"\\? Legal escapes",
            ),
            (r#""[ 'hello' ]""#, "[ 'hello' ]"),
            (r#""[ \'hello\' ]""#, "[ 'hello' ]"),
            (r#""[ \"hello\" ]""#, "[ \"hello\" ]"),
            (r#""\x41\X42\U0001F600\`""#, "AB😀`"),
            ("\"a\r\nb\rc\"", "a\nb\nc"),
            (r#""a\*b""#, "a*b"),
        ] {
            let f = format!("a = {quoted}");
            assert_eq!(value_of(&f), Literal::String(decoded.into()), "{quoted}");
        }
        for (quoted, needle) in [
            (r#""\a\b\f\n\r\t\v\'\"\\\? Illegal escape \>""#, "unknown escape `\\>`"),
            (r#""\u00f""#, "\\u escape"),
            (r#""\u00fÿ""#, "\\u escape"),
            (r#""\uD800""#, "\\u escape"),
            (r#""\26""#, "octal"),
            (r#""\268""#, "octal"),
            (r#""\400""#, "unknown escape"),
            (r#""\267\""#, "unterminated"),
            (r#""\U00110000""#, "\\U escape"),
            (r#""\xZZ""#, "\\x escape"),
            ("'", "unterminated"),
        ] {
            let f = format!("a = {quoted}");
            let e = parse(&f).unwrap_err();
            assert!(e.message.contains(needle), "{quoted}: {e}");
        }
    }

    #[test]
    fn invalid_filters_say_where_and_what_to_do() {
        for (f, position, needle) in [
            ("a =", 3, "expected a value"),
            ("= 1", 0, "field name"),
            ("(a = 1", 6, "`)` to close the `(` at position 0"),
            ("a = 1)", 5, "unmatched `)`"),
            ("a == 1", 3, "write `=`"),
            (r#"a = "open"#, 4, "unterminated"),
            ("a = pro", 4, r#"quote it, `a = "pro"`"#),
            ("a = *", 4, r#"quote it, `a = "*"`"#),
            ("a = Ada*", 4, "inside the quotes"),
            ("a # 1", 2, "unexpected character `#`"),
            ("a = 1 # b = 2", 6, "unexpected character `#`"),
            ("a = 1 AND", 9, "found the end"),
            ("a = 1 AND OR b = 2", 10, "before `OR`"),
            (r#"a = "\q""#, 5, "unknown escape"),
            ("a. = 1", 3, "after `.`"),
            ("a = 1e999", 4, "not a number"),
            ("<", 0, "field name"),
            ("prod", 0, "no free-text search"),
            ("New York Giants", 0, "`New` stands alone"),
            (r#"a = "x" Lovelace"#, 8, "`Lovelace` stands alone"),
            ("a = 1 and b = 2", 6, "write `AND`"),
            ("a = (1 OR 2)", 4, "one value"),
            ("regex(m.key, '^a')", 0, "no filter functions"),
            (
                "first_name = Ada Lovelace",
                13,
                r#"quote it, `first_name = "Ada Lovelace"`"#,
            ),
            (
                r#"first_name = Ada last_name = "L""#,
                13,
                r#"quote it, `first_name = "Ada"`"#,
            ),
            ("email = ada@example.com AND x = 1", 8, r#"`email = "ada@example.com"`"#),
            (r"a = C\x", 4, r#"`a = "C\\x"`"#),
            ("a = TRUE", 4, "lower case (`true`)"),
        ] {
            let e = parse(f).unwrap_err();
            assert_eq!(e.position, position, "{f}: {e}");
            assert!(e.message.contains(needle), "{f}: {e}");
        }
        let deep = format!("{}a = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(parse(&deep).unwrap_err().message.contains("deeper"));
        let nots = format!("{}a = 1", "NOT ".repeat(40));
        assert!(parse(&nots).is_err());
        let long = format!("a = \"{}\"", "x".repeat(MAX_LENGTH));
        assert!(parse(&long).unwrap_err().message.contains("longer"));
    }
}
