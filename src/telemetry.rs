//! Logging: `tracing` to stderr, as text or JSON lines, filtered by `RUST_LOG` (default: `info`
//! for `serve`, `warn` for the one-shot commands). Text is coloured only on a terminal and only
//! while `NO_COLOR` is unset or empty, so a log written to a file or a pipe holds no escape codes.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text for people (coloured on a terminal).
    Pretty,
    /// One JSON object a line, never coloured.
    Json,
}

/// What a command logs and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    pub format: Format,
    /// The `RUST_LOG` filter used when the variable is unset or empty.
    pub default_filter: &'static str,
}

impl Logging {
    /// A server's: its progress (`info`) in `format`.
    pub fn server(format: Format) -> Logging {
        Logging {
            format,
            default_filter: "info",
        }
    }

    /// A one-shot command's (`status`, `migrate`, …): its answer goes to stdout, and stderr
    /// shows only warnings and errors.
    pub fn command() -> Logging {
        Logging {
            format: Format::Pretty,
            default_filter: "warn",
        }
    }
}

/// Whether text logs are coloured: only on a terminal, and only while `NO_COLOR` is unset or
/// empty (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// `RUST_LOG` when set (and not empty) and valid, else `default`.
fn filter(default: &str) -> EnvFilter {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new(default)),
        _ => EnvFilter::new(default),
    }
}

/// Installs the global subscriber once; later calls are ignored (tests call it many times).
pub fn init(logging: Logging) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(logging.default_filter))
        .with_writer(std::io::stderr);
    let _ = match logging.format {
        Format::Json => builder.with_ansi(false).json().try_init(),
        Format::Pretty => {
            let ansi = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            builder.with_ansi(ansi).try_init()
        }
    };
}

/// For tests: the same subscriber, writing through libtest's capture (shown only on failure).
pub fn init_for_tests() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a file or a pipe gets no escape codes");
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
