//! Secrets in memory: values whose `Debug` output never shows them.

/// A value whose `Debug` output never shows it (URLs with passwords, secrets).
#[derive(Clone)]
pub struct Redacted<T>(pub T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}
