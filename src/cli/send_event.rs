//! `send-event`: signs a body exactly as Svix does and posts it (for trying the server without a
//! Clerk account). Also the small HTTP client the tests and the bench use.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::RngExt;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::args::secret;
use crate::config::Redacted;
use crate::ingest::verify::WebhookSecrets;

/// A response's status and body text.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: String,
}

/// A fresh Svix-style message id: `msg_` and 27 base62 characters.
pub fn new_message_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let tail: String = (0..27)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("msg_{tail}")
}

/// The three Svix headers for `body` signed with the first secret at `timestamp`.
pub fn svix_headers(
    secrets: &WebhookSecrets,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<Vec<(String, String)>> {
    let signature = secrets
        .sign(id, timestamp, body)
        .context("cannot sign: no secret, or the body is not UTF-8")?;
    Ok(vec![
        ("svix-id".into(), id.into()),
        ("svix-timestamp".into(), timestamp.to_string()),
        ("svix-signature".into(), signature),
    ])
}

/// Signs `body` with the current time and posts it to `url`.
pub async fn send(url: &str, secrets: &WebhookSecrets, id: &str, body: &[u8]) -> anyhow::Result<Response> {
    let headers = svix_headers(secrets, id, chrono::Utc::now().timestamp(), body)?;
    post(url, &headers, Bytes::copy_from_slice(body)).await
}

/// `url` as a URI, if it is an absolute http:// or https:// URL (nothing else can be sent to).
fn http_uri(url: &str) -> anyhow::Result<hyper::Uri> {
    url.parse::<hyper::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
        .with_context(|| {
            format!("`{url}` is not an http:// or https:// URL (such as http://127.0.0.1:8080/webhooks/clerk)")
        })
}

/// Posts `body` as JSON with extra `headers` (http or https).
pub async fn post(url: &str, headers: &[(String, String)], body: Bytes) -> anyhow::Result<Response> {
    let mut request = hyper::Request::post(http_uri(url)?).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .with_context(|| format!("invalid request to {url}"))?;
    send_request(url, request).await
}

/// Gets `url` (http or https).
pub async fn get(url: &str) -> anyhow::Result<Response> {
    let request = hyper::Request::get(http_uri(url)?)
        .body(Full::new(Bytes::new()))
        .with_context(|| format!("invalid request to {url}"))?;
    send_request(url, request).await
}

type HttpsClient = Client<hyper_tls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

/// One client for the process: making the TLS connector loads the system's CA store (~50 ms of
/// CPU), far more than a request. No idle connections are kept, so each request has a connection
/// of its own (servers come and go in tests and benchmarks).
fn client() -> &'static HttpsClient {
    static CLIENT: std::sync::OnceLock<HttpsClient> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(hyper_tls::HttpsConnector::new())
    })
}

async fn send_request(url: &str, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<Response> {
    let response = client()
        .request(request)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {}; is the server running there?", causes(&e)))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("{url} answered {status}, then its answer broke off: {}", causes(&e)))?
        .to_bytes();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An error's causes on one line, outermost first, without hyper's bare "client error (Connect)",
/// each text once.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        let text = cause.to_string();
        let bare = text.starts_with("client error (") && cause.source().is_some();
        if !bare && parts.last() != Some(&text) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[derive(Args, Debug)]
pub(super) struct SendEventArgs {
    /// The signing secret, `whsec_…` (the first one when several are given).
    #[arg(long, env = "CLERK_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    secret: Redacted<String>,
    /// Where to post.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/clerk")]
    url: String,
    /// The delivery id (`svix-id`); a fresh one when absent. Reuse one to try a redelivery.
    #[arg(long)]
    id: Option<String>,
    /// The event body (JSON), or `-` for standard input.
    file: PathBuf,
}

/// The `send-event` command: reads the body, signs and posts it, prints the answer.
pub(super) async fn send_command(args: SendEventArgs) -> anyhow::Result<ExitCode> {
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read standard input")?;
        buf
    } else {
        tokio::fs::read(&args.file)
            .await
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let secrets = WebhookSecrets::parse(&[args.secret.0.as_str()]).map_err(|e| {
        anyhow::anyhow!(
            "--secret / CLERK_WEBHOOK_SECRET: {e}; copy the endpoint's signing secret from the Clerk Dashboard \
             (Webhooks, the endpoint, Signing Secret)"
        )
    })?;
    let id = args.id.unwrap_or_else(new_message_id);
    let response = send(&args.url, &secrets, &id, &body).await?;
    println!(
        "{} {}",
        response.status.as_u16(),
        response.status.canonical_reason().unwrap_or("")
    );
    println!("{}", response.body);
    if response.status.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    let what_to_do = match response.status.as_u16() {
        401 => "sign with the secret the server verifies with: --secret / CLERK_WEBHOOK_SECRET as given to serve",
        413 => "the event is larger than the server accepts (serve's --max-body-bytes)",
        400 => "the server could not read the event: see its answer above",
        503 => "the server's database is unavailable: send it again later (the same --id is a redelivery)",
        404 | 405 => "is --url the server's webhook endpoint, http://<serve's --http-addr>/webhooks/clerk?",
        _ => "see the server's answer above",
    };
    eprintln!("error: {} answered {}: {what_to_do}", args.url, response.status);
    Ok(ExitCode::FAILURE)
}
