//! How a command reaches a running server's gRPC port: its URL, TLS (`--ca`, `--cert`/`--key`)
//! and a bearer token; and how a failed call is said on one line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

/// How long connecting, and then the server's answer to the watch (not its first message), may
/// take.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Where the server is and how to be let in.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The server's gRPC address.
    #[arg(long, env = "CLERK_MIRROR_GRPC_URL", default_value = "http://127.0.0.1:50051")]
    pub url: String,
    /// A bearer token for a server started with tokens (prefer the environment variable, or
    /// `--token-file`: a command line is visible to other users of the machine).
    #[arg(long, env = "CLERK_MIRROR_TOKEN", hide_env_values = true, conflicts_with = "token_file", value_parser = crate::cli::args::secret)]
    pub token: Option<crate::secrets::Redacted<String>>,
    /// A file holding the bearer token (its first non-empty line).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// For an `https://` URL: the CA certificate (PEM) the server's certificate is signed by.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for a server that requires one (mTLS); with `--key`.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ConnectArgs {
    /// The connection `args` ask for: plain or TLS (`--ca`, `--cert`/`--key`) to `--url`.
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let args = self;
        let form = "write it as http://127.0.0.1:50051 (or https://… with --ca)";
        let endpoint = Endpoint::from_shared(args.url.clone())
            .with_context(|| format!("--url `{}` is not a URL; {form}", args.url))?;
        anyhow::ensure!(
            matches!(endpoint.uri().scheme_str(), Some("http" | "https")),
            "--url `{}` is not an http:// or https:// URL; {form}",
            args.url
        );
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
        };
        let endpoint = endpoint.connect_timeout(ANSWER_WITHIN);
        if !args.url.starts_with("https://") {
            anyhow::ensure!(
                args.ca.is_none() && args.cert.is_none(),
                "--ca, --cert and --key are for an https:// URL"
            );
            return Ok(endpoint);
        }
        let ca = args
            .ca
            .as_ref()
            .context("an https:// URL needs --ca (the server's CA certificate, PEM)")?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca", ca)?));
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(read("--cert", cert)?, read("--key", key)?));
        }
        endpoint
            .tls_config(tls)
            .context("cannot use --ca, --cert and --key for TLS (are they PEM?)")
    }

    /// The `authorization` header for `--token` or `--token-file`, if either is given.
    pub fn authorization(&self) -> anyhow::Result<Option<MetadataValue<Ascii>>> {
        let args = self;
        let token = match (&args.token, &args.token_file) {
            (Some(token), _) => token.0.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --token-file {}", path.display()))?
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .with_context(|| format!("--token-file {} holds no token (only empty lines)", path.display()))?
                .to_string(),
            (None, None) => return Ok(None),
        };
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .context("the token holds characters other than printable ASCII: copy it again")?;
        Ok(Some(value))
    }
}

/// An error's causes, outermost first, on one line (without tonic's bare "transport error").
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut texts = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        texts.push(cause.to_string());
        next = cause.source();
    }
    one_line(texts)
}

/// Texts of an error and its causes joined by ": ", each part once where hyper and h2 repeat
/// their cause's text in their own.
pub fn one_line(texts: impl IntoIterator<Item = String>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for text in texts {
        for part in text.split(": ") {
            if part != "transport error" && parts.last().map(String::as_str) != Some(part) {
                parts.push(part.to_string());
            }
        }
    }
    parts.join(": ")
}

/// `OutOfRange, CURSOR_EXPIRED` (the reason when the status carries an `ErrorInfo`).
pub fn code_and_reason(status: &tonic::Status) -> String {
    match status.get_details_error_info() {
        Some(info) if !info.reason.is_empty() => format!("{:?}, {}", status.code(), info.reason),
        _ => format!("{:?}", status.code()),
    }
}
