//! Bearer tokens from a file, so secrets stay out of command lines and process listings: one
//! `name=secret` a line; blank lines and lines starting with `#` are ignored. A bad line is
//! reported by file and line number, never by its content (it may hold a secret).

use std::path::{Path, PathBuf};

use super::auth::Token;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, line {line}: {reason}", path.display())]
    BadLine { path: PathBuf, line: usize, reason: String },
}

/// Every token in the file at `path`.
pub fn read(path: &Path) -> Result<Vec<Token>, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|(line, reason)| TokenFileError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    })
}

/// The tokens in a file's text; on a bad line, its number (from 1) and what is wrong.
fn parse(text: &str) -> Result<Vec<Token>, (usize, String)> {
    let mut tokens = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        tokens.push(Token::parse(line).map_err(|reason| (i + 1, reason))?);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped_and_bad_lines_are_numbered() {
        let tokens =
            parse("# billing\n\nbilling=0123456789abcdef0123\n  # ops\nops = ffffffffffffffffffff \n").unwrap();
        let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["billing", "ops"]);
        assert_eq!(tokens[1].secret.0, "ffffffffffffffffffff");
        let (line, reason) =
            parse("# a comment\nbilling=0123456789abcdef0123\nops:ffffffffffffffffffff\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(!reason.contains("ffff"), "{reason}");
    }
}
