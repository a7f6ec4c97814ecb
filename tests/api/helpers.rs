//! Test support: the binary's shared PostgreSQL cluster, a fresh database per test, and
//! `spawn_app()`, which runs a real server on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use clerk_mirror::cli::send_event::{self, Response};
use clerk_mirror::config::{Config, DatabaseConfig};
use clerk_mirror::ingest::verify::{Clock, WebhookSecrets};
use clerk_mirror::pg::{Cluster, ClusterOptions};
use clerk_mirror::{Application, db};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{OnceCell, oneshot};

/// The secret test apps accept (first) …
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// … and a second one, for rotation.
pub const SECOND_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

const TEMPLATE: &str = "clerk_mirror_template";

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory of its own under the temp dir, unique in this run.
pub fn temp_dir(what: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("cm-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Starts a throwaway (non-durable) cluster that dies with this process: stopped when the test
/// drops it, else when the binary exits, else (SIGKILLed binary) killed with it.
pub async fn start_cluster(what: &str) -> Cluster {
    Cluster::start(ClusterOptions {
        data_dir: temp_dir(what),
        durable: false,
        die_with_parent: true,
    })
    .await
    .expect("start a test PostgreSQL cluster")
}

/// Starts `cluster`'s data directory again (after `stop`), as `start_cluster` made it.
pub async fn restart_cluster(cluster: &Cluster) -> Cluster {
    Cluster::start(ClusterOptions {
        data_dir: cluster.data_dir().to_path_buf(),
        durable: false,
        die_with_parent: true,
    })
    .await
    .expect("restart the cluster")
}

/// At exit (libtest ends the binary with `exit`; the static is never dropped): stop the shared
/// cluster, and every other one a test left running, then remove the shared one's directories.
/// The clusters stop first: a postmaster whose data dir is gone cannot be told from another
/// process that reuses its pid.
extern "C" fn remove_shared_cluster_dir() {
    clerk_mirror::pg::stop_throwaway_clusters();
    if let Some(cluster) = CLUSTER.get() {
        let _ = std::fs::remove_dir_all(cluster.data_dir());
        let _ = std::fs::remove_dir_all(cluster.socket_dir());
    }
}

/// The binary's shared cluster.
pub async fn shared_cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let cluster = start_cluster("shared").await;
            // SAFETY: registering a plain extern "C" function with no captured state.
            unsafe { libc::atexit(remove_shared_cluster_dir) };
            cluster
        })
        .await
}

/// A fresh, migrated database on `cluster` (made from a template on the shared cluster).
pub async fn fresh_database(cluster: &Cluster) -> String {
    let name = format!("t_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut conn = PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create db");
    let pool = PgPool::connect_with(cluster.connect_options(&name))
        .await
        .expect("connect");
    db::migrate(&pool).await.expect("migrate");
    pool.close().await;
    name
}

/// A fresh database on the shared cluster, copied from the migrated template.
pub async fn shared_database() -> (&'static Cluster, String) {
    let cluster = shared_cluster().await;
    TEMPLATE_READY
        .get_or_init(|| async {
            let mut conn = PgConnection::connect_with(&cluster.connect_options("postgres"))
                .await
                .expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {TEMPLATE}")))
                .execute(&mut conn)
                .await
                .expect("create template");
            let pool = PgPool::connect_with(cluster.connect_options(TEMPLATE))
                .await
                .expect("connect");
            db::migrate(&pool).await.expect("migrate the template");
            pool.close().await;
        })
        .await;
    let name = format!("t_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut conn = PgConnection::connect_with(&cluster.connect_options("postgres"))
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create a test database");
    (cluster, name)
}

/// A running server and what tests need to talk to it.
pub struct TestApp {
    pub http_addr: std::net::SocketAddr,
    pub grpc_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
    /// A pool of the test's own on the app's database.
    pub pool: PgPool,
    pub secrets: WebhookSecrets,
    /// The app's read cache (`None`: disabled).
    pub cache: Option<clerk_mirror::cache::ReadCache>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A server on a fresh database of the shared cluster.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server on a fresh database of the shared cluster, with `change` made to the test
/// configuration (see [`spawn_app_on`]).
pub async fn spawn_app_with(change: impl FnOnce(&mut Config)) -> TestApp {
    let (cluster, name) = shared_database().await;
    spawn_app_on(cluster, &name, change).await
}

/// Signs with these secrets instead of [`SECRET`] (keeping the clock).
pub fn set_secrets(config: &mut Config, secrets: &[&str]) {
    config.webhook_secrets = WebhookSecrets::parse(secrets).expect("test secrets");
}

/// Checks webhook timestamps against `clock` instead of the system clock.
pub fn set_clock(config: &mut Config, clock: Clock) {
    config.webhook_secrets = config.webhook_secrets.clone().with_clock(clock);
}

/// Keeps changes (and applied inbox rows) for `keep`, pruning every 20 ms.
pub fn keep_for(config: &mut Config, keep: std::time::Duration) {
    let applier = config.applier.as_mut().expect("an applier prunes");
    applier.retention.changes = keep;
    applier.retention.inbox = keep;
    applier.prune_every = std::time::Duration::from_millis(20);
}

/// The tests' configuration for database `name` of `cluster`: the production defaults, on
/// 127.0.0.1:0, with [`SECRET`], small pools (many apps share the binary's cluster; a database
/// that does not answer within 3 s counts as unavailable, which the outage tests rely on) and an
/// applier polling every 200 ms.
pub fn test_config(cluster: &Cluster, name: &str) -> Config {
    let mut config = Config::new(
        DatabaseConfig::Options(Box::new(cluster.connect_options(name))),
        WebhookSecrets::parse(&[SECRET]).expect("test secrets"),
    );
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.http_addr = loopback;
    config.grpc_addr = loopback;
    config.admin_addr = loopback;
    config.max_connections = 6;
    config.acquire_timeout = std::time::Duration::from_secs(3);
    if let Some(applier) = config.applier.as_mut() {
        applier.idle_poll = std::time::Duration::from_millis(200);
    }
    // Outbound webhooks: a key of the test's own, local receivers allowed, and a sender that
    // starts at once and retries within a second.
    let key = clerk_mirror::outbound::sealed::SealingKey::generate_text();
    config.outbound.key = Some(Arc::new(clerk_mirror::outbound::sealed::SealingKey::parse(&key).expect("a key")));
    config.outbound.policy.allow_private = true;
    config.outbound.takeover_wait = std::time::Duration::from_millis(20);
    config.outbound.poll = std::time::Duration::from_millis(200);
    config.outbound.schedule.first = std::time::Duration::from_millis(100);
    config.outbound.schedule.longest = std::time::Duration::from_secs(1);
    config
}

/// A server on database `name` of `cluster`, with `change` made to [`test_config`].
pub async fn spawn_app_on(cluster: &Cluster, name: &str, change: impl FnOnce(&mut Config)) -> TestApp {
    clerk_mirror::telemetry::init_for_tests();
    let mut config = test_config(cluster, name);
    change(&mut config);
    let secrets = config.webhook_secrets.clone();
    let app = Application::build(config).await.expect("build the app");
    let (tx, rx) = oneshot::channel::<()>();
    let test_app = TestApp {
        http_addr: app.http_addr(),
        grpc_addr: app.grpc_addr(),
        admin_addr: app.admin_addr(),
        pool: PgPool::connect_with(cluster.connect_options(name))
            .await
            .expect("connect"),
        secrets,
        cache: app.read_cache(),
        shutdown: Some(tx),
        server: None,
    };
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        server: Some(server),
        ..test_app
    }
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("http://{}/webhooks/clerk", self.http_addr)
    }

    /// Posts `body` signed with the first secret under a fresh id; returns the id too.
    pub async fn send(&self, body: &str) -> (String, Response) {
        let id = send_event::new_message_id();
        let response = self.send_as(&id, body).await;
        (id, response)
    }

    /// Posts `body` signed with the first secret under `id`.
    pub async fn send_as(&self, id: &str, body: &str) -> Response {
        send_event::send(&self.webhook_url(), &self.secrets, id, body.as_bytes())
            .await
            .expect("post")
    }

    /// Posts raw bytes with exactly these headers.
    pub async fn post(&self, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
        let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        send_event::post(&self.webhook_url(), &headers, body.into())
            .await
            .expect("post")
    }

    /// GET on the public HTTP port.
    pub async fn get(&self, path: &str) -> Response {
        get(&format!("http://{}{path}", self.http_addr)).await
    }

    pub async fn inbox_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// The stored raw body of a webhook delivery, if stored (outer None: no row).
    pub async fn stored_body(&self, id: &str) -> Option<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT body FROM inbox WHERE source = 'webhook' AND event_key = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("select")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("the server stopped cleanly");
        }
    }
}

/// A GET (the library's small client, as `bench` uses it).
pub async fn get(url: &str) -> Response {
    send_event::get(url).await.expect("get")
}

/// A clock fixed at `ts` seconds.
pub fn fixed_clock(ts: i64) -> Clock {
    Arc::new(move || ts)
}

/// An invented `user.created` event for user `id`.
pub fn user_created(id: &str) -> String {
    serde_json::json!({
        "data": {
            "id": id, "object": "user", "first_name": "Ada", "last_name": "Lovelace",
            "email_addresses": [{"id": "idn_1", "object": "email_address", "email_address": "ada@example.com"}],
            "primary_email_address_id": "idn_1", "public_metadata": {}, "private_metadata": null,
            "created_at": 1767225600000i64, "updated_at": 1767225600000i64
        },
        "event_attributes": {"http_request": {"client_ip": "", "user_agent": ""}},
        "instance_id": "ins_test", "object": "event", "timestamp": 1767225600000i64, "type": "user.created"
    })
    .to_string()
}

impl TestApp {
    /// Waits until the applier has taken every inbox row (polling the database, bounded), and
    /// the read cache (if any) is loaded and has applied the log's head: reads then see it all.
    pub async fn wait_until_applied(&self) {
        wait_until_applied(&self.pool).await;
        self.wait_for_cache().await;
    }

    /// Waits until the read cache (if any) is loaded and has applied the log's current head.
    pub async fn wait_for_cache(&self) {
        let Some(cache) = &self.cache else { return };
        let head: i64 = sqlx::query_scalar("SELECT head_seq FROM log_head")
            .fetch_one(&self.pool)
            .await
            .expect("read the head");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let waited = cache.wait_for(head, std::time::Duration::from_secs(1)).await;
            if waited == clerk_mirror::cache::Waited::Reached {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the read cache has not applied {head} after 30 s: {:?}",
                cache.state()
            );
            // Not serving yet (loading): its state changes when it is loaded.
            if waited == clerk_mirror::cache::Waited::NotServing {
                cache.wait_until_ready(std::time::Duration::from_secs(1)).await;
            }
        }
    }

    /// Sends each body (fresh ids), asserting 200, then waits for the applier.
    pub async fn send_all_and_apply(&self, bodies: &[String]) -> Vec<String> {
        let mut ids = Vec::new();
        for body in bodies {
            let (id, response) = self.send(body).await;
            assert_eq!(response.status, hyper::StatusCode::OK, "{}", response.body);
            ids.push(id);
        }
        self.wait_until_applied().await;
        ids
    }
}

/// Waits until no inbox row is pending on `pool` (polling, at most 30 s).
pub async fn wait_until_applied(pool: &PgPool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE status = 'pending'")
            .fetch_one(pool)
            .await
            .expect("count pending");
        if pending == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} inbox rows still pending after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Puts events straight into the inbox (one statement) for the app's applier.
pub async fn enqueue(pool: &PgPool, bodies: &[String]) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let keys: Vec<String> = bodies
        .iter()
        .map(|_| format!("msg_l{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)))
        .collect();
    let types: Vec<Option<String>> = bodies
        .iter()
        .map(|b| clerk_mirror::ingest::envelope::parse(b.as_bytes()).unwrap().event_type)
        .collect();
    let raw: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
    sqlx::query(
        "INSERT INTO inbox (source, event_key, event_type, body)
         SELECT 'webhook', k, t, b FROM unnest($1::text[], $2::text[], $3::bytea[]) AS r(k, t, b)",
    )
    .bind(keys)
    .bind(types)
    .bind(raw)
    .execute(pool)
    .await
    .unwrap();
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["billing-client".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    Pki {
        ca: ca.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

impl Pki {
    /// The server's TLS material, with the CA as client CA (mTLS) or without.
    pub fn server_tls(&self, mtls: bool) -> clerk_mirror::config::TlsConfig {
        clerk_mirror::config::TlsConfig {
            cert: self.server_cert.clone().into_bytes(),
            key: clerk_mirror::config::Redacted(self.server_key.clone().into_bytes()),
            client_ca: mtls.then(|| self.ca.clone().into_bytes()),
        }
    }

    /// A gRPC channel to `localhost:port` over TLS trusting the CA, with the client certificate
    /// or without.
    pub async fn grpc_channel(
        &self,
        port: u16,
        client_certificate: bool,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name("localhost");
        if client_certificate {
            tls = tls.identity(Identity::from_pem(&self.client_cert, &self.client_key));
        }
        Channel::from_shared(format!("https://localhost:{port}"))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }

    /// GET `path` over HTTPS (HTTP/1.1) from `addr`, trusting the CA, with the client
    /// certificate or without, and with a bearer token or without.
    pub async fn https_get(
        &self,
        addr: std::net::SocketAddr,
        path: &str,
        client_certificate: bool,
        token: Option<&str>,
    ) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
        use http_body_util::{BodyExt, Empty};
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(cert?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = if client_certificate {
            let chain = CertificateDer::pem_slice_iter(self.client_cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(self.client_key.as_bytes())?)?
        } else {
            builder.with_no_client_auth()
        };
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let mut request = hyper::Request::get(path).header("host", "localhost");
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = sender.send_request(request.body(Empty::<Bytes>::new())?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// The next change a watch stream sends (heartbeats and `caught_up` passed over), within 30 s.
pub async fn next_change(
    stream: &mut tonic::codec::Streaming<clerk_mirror::pb::WatchChangesResponse>,
) -> clerk_mirror::pb::Change {
    use clerk_mirror::pb::watch_changes_response::Event;
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .expect("no error")
            .expect("the stream goes on");
        if let Some(Event::Change(c)) = m.event {
            return c;
        }
    }
}
