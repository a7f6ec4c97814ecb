//! `Application::build` connects, migrates and binds every port; `run_until_stopped` starts
//! every server and background task under one supervisor, waits for the shutdown signal it is
//! given or for a task to end early, then drains in-flight work before returning.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tracing::{error, info};

use crate::config::Config;
use crate::db::Readiness;
use crate::hub::Hub;
use crate::ingest::{InboxWriter, IngestState};
use crate::metrics::{Metrics, RpcMetricsLayer};
use crate::supervise::Supervisor;
use crate::{admin, applier, db, grpc, http_server, ingest, store};

/// A built, bound, not yet serving server.
pub struct Application {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    listeners: Listeners,
    server: Server,
    /// Tasks an embedder added with [`Application::supervise`].
    extra: Vec<(&'static str, ExtraTask)>,
}

/// The three bound ports.
struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
}

/// What the servers and background tasks are built from.
struct Server {
    /// The admin port's TLS (the gRPC port's comes from tonic, with the same material).
    admin_tls: Option<Arc<rustls::ServerConfig>>,
    pool: sqlx::PgPool,
    /// Reads have a pool of their own: they never wait behind ingest or the applier.
    read_pool: sqlx::PgPool,
    metrics: Arc<Metrics>,
    /// The read cache (`None` when `read_cache_bytes` is 0).
    cache: Option<crate::cache::ReadCache>,
    config: Config,
}

type ExtraTask =
    Box<dyn FnOnce(CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send>;

impl Application {
    /// Connects to the database, applies migrations and binds the three ports.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        anyhow::ensure!(
            !config.webhook_secrets.is_empty(),
            "no webhook secret configured: pass --webhook-secret (or CLERK_WEBHOOK_SECRET) with the \
             endpoint's `whsec_…` signing secret from Clerk's dashboard"
        );
        let mtls = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if config.tokens.is_empty() && !mtls && !config.allow_unauthenticated {
            for (what, addr) in [("gRPC", config.grpc_addr), ("admin", config.admin_addr)] {
                anyhow::ensure!(
                    addr.ip().is_loopback(),
                    "refusing to serve the {what} API on {addr} without authentication: it holds every user's email \
                     and metadata. Configure --reader-token/--admin-token or --client-ca (mTLS), bind it to 127.0.0.1, or pass \
                     --allow-unauthenticated if something else guards it"
                );
            }
        }
        let limits = &config.http_limits;
        for (flag, value) in [
            ("--max-concurrent-rpcs", config.max_concurrent_rpcs),
            ("--max-header-count", limits.max_headers),
            ("--max-header-bytes", limits.max_header_bytes),
        ] {
            anyhow::ensure!(value > 0, "{flag} must be at least 1");
        }
        // Checked before anything else starts: a wrong file fails here, naming which.
        let admin_tls = config
            .tls
            .as_ref()
            .map(|tls| crate::tls::server_config(tls, &[b"http/1.1"]))
            .transpose()?;
        let pool = db::connect(&config.database, config.max_connections, config.acquire_timeout)
            .await
            .context("cannot connect to the database")?;
        db::migrate(&pool)
            .await
            .context("cannot apply the database migrations")?;
        // The API's reads share `max_connections` between this pool (lists, checks, heads) and
        // the point reads' lender (`grpc_services`), so a replica opens no more than before.
        let read_pool = db::connect_reads(&config.database, read_share(config.max_connections), config.acquire_timeout)
            .await
            .context("cannot connect to the database")?;
        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the {what} address {addr}"))
        };
        let http = bind(config.http_addr, "HTTP").await?;
        let grpc = bind(config.grpc_addr, "gRPC").await?;
        let admin = bind(config.admin_addr, "admin").await?;
        let metrics = Metrics::new();
        let cache = (config.read_cache_bytes > 0).then(|| crate::cache::ReadCache::new(metrics.clone()));
        Ok(Application {
            http_addr: http.local_addr()?,
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            listeners: Listeners { http, grpc, admin },
            server: Server {
                metrics,
                cache,
                admin_tls,
                pool,
                read_pool,
                config,
            },
            extra: Vec::new(),
        })
    }

    /// The bound public webhook address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The read cache, to wait on its cursor (`None`: disabled).
    pub fn read_cache(&self) -> Option<crate::cache::ReadCache> {
        self.server.cache.clone()
    }

    /// Runs `task(stop)` beside the server's own background tasks, under the same supervision:
    /// it is meant to run until `stop` is cancelled (when the server stops), and ending before
    /// that, with an error, a panic or not, stops the server with an error naming `name`.
    pub fn supervise<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.extra.push((name, Box::new(move |stop| Box::pin(task(stop)))));
    }

    /// The application's pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.server.pool
    }

    /// Serves until `shutdown` completes or a background task ends early; then stops accepting,
    /// lets in-flight requests finish (every acknowledged webhook is committed) and returns: `Ok`
    /// after a requested stop, an error naming the task that ended early otherwise.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let readiness = Readiness::new(self.server.read_pool.clone());
        let mut supervisor = Supervisor::new(readiness.clone());
        let (pool, read_pool) = (self.server.pool.clone(), self.server.read_pool.clone());
        let timeout = self.server.config.shutdown_timeout;
        let health = match self.start(&supervisor, readiness.clone()).await {
            Ok(health) => health,
            Err(e) => {
                supervisor.drain().await;
                return Err(e);
            }
        };
        let early = supervisor.run_until(shutdown).await;
        if let Some(ended) = &early {
            error!(task = ended.task, reason = %ended.reason, "a background task ended early; stopping the server");
            grpc::check_health(&health, &readiness, None).await;
        }
        // Once asked to stop, everything has `timeout` to finish.
        let failures = tokio::time::timeout(timeout, supervisor.drain()).await;
        pool.close().await;
        read_pool.close().await;
        let Ok(failures) = failures else {
            error!(?timeout, "shutdown did not finish in time; stopping anyway");
            anyhow::bail!("shutdown did not finish within {timeout:?}");
        };
        info!("stopped");
        match failures.into_iter().next() {
            Some(first) if first.early => Err(anyhow::anyhow!("{first}; the server stopped")),
            Some(first) => Err(anyhow::anyhow!("{first} while stopping")),
            None => Ok(()),
        }
    }

    /// Starts every server and background task under `supervisor`; returns the health reporter.
    async fn start(self, supervisor: &Supervisor, readiness: Readiness) -> anyhow::Result<HealthReporter> {
        for (name, task) in self.extra {
            supervisor.spawn(name, task(supervisor.token()));
        }
        let health = self.server.start(self.listeners, supervisor, readiness).await?;
        info!(http = %self.http_addr, grpc = %self.grpc_addr, admin = %self.admin_addr, "serving");
        Ok(health)
    }
}

impl Server {
    /// Starts, in order: the webhook and admin servers, the change hub and read cache, the gRPC
    /// server, then the writers (reconcile and the applier).
    async fn start(
        mut self,
        listeners: Listeners,
        supervisor: &Supervisor,
        readiness: Readiness,
    ) -> anyhow::Result<HealthReporter> {
        let stop = supervisor.stop_signal();
        // Outbound webhooks never go to the mirror's own ports.
        for l in [&listeners.http, &listeners.grpc, &listeners.admin] {
            self.config.outbound.policy.own.push(l.local_addr()?);
        }
        self.serve_webhooks(supervisor, &readiness, listeners.http);
        let tokens = Arc::new(self.config.tokens.clone());
        self.serve_admin(supervisor, listeners.admin, tokens.clone());
        let read_side = self.start_hub_and_cache(supervisor, &stop).await?;
        let log_id = read_side.log_id.clone();
        let (routes, health) = self.grpc_services(supervisor, readiness, &stop, read_side).await?;
        self.serve_grpc(supervisor, listeners.grpc, routes, tokens)?;
        self.start_writers(supervisor, &stop, log_id)?;
        Ok(health)
    }

    /// The inbox writer and the public HTTP server that takes webhooks into it.
    fn serve_webhooks(&self, supervisor: &Supervisor, readiness: &Readiness, listener: TcpListener) {
        let (writer, writer_task) = InboxWriter::spawn(self.pool.clone(), self.config.ingest_batch_size);
        // It ends when the last handle drops with the HTTP router, after the HTTP server.
        supervisor.spawn("inbox writer", writer_task);
        let state = IngestState {
            secrets: self.config.webhook_secrets.clone(),
            writer,
            readiness: readiness.clone(),
            max_body_bytes: self.config.max_body_bytes,
            metrics: self.metrics.clone(),
        };
        let http_router = ingest::router(state).layer(tower_http::trace::TraceLayer::new_for_http());
        supervisor.spawn(
            "HTTP server",
            http_server::serve(
                listener,
                http_router,
                None,
                self.config.http_limits,
                supervisor.stopped(),
            ),
        );
    }

    /// The admin port: metrics, reconcile and health over HTTP/1.
    fn serve_admin(&self, supervisor: &Supervisor, listener: TcpListener, tokens: Arc<crate::grpc::auth::Tokens>) {
        supervisor.spawn(
            "admin server",
            http_server::serve(
                listener,
                admin::router(self.metrics.clone(), self.read_pool.clone(), tokens),
                self.admin_tls.clone(),
                self.config.http_limits,
                supervisor.stopped(),
            ),
        );
    }

    /// The change hub, and the read cache following it (loading in the background: readiness
    /// does not wait for it, and reads go to PostgreSQL until it is loaded).
    async fn start_hub_and_cache(
        &self,
        supervisor: &Supervisor,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<ReadSide> {
        let log_id = store::read::log_id(&self.read_pool)
            .await
            .context("cannot read the change log's id")?;
        let (hub, hub_task) = Hub::spawn(
            self.read_pool.clone(),
            self.config.hub_capacity,
            self.config.hub_poll,
            stop.clone(),
            self.metrics.clone(),
        )
        .await
        .context("cannot start the change hub")?;
        supervisor.spawn("change hub", hub_task);
        let cache = self
            .cache
            .clone()
            .unwrap_or_else(|| crate::cache::ReadCache::new(self.metrics.clone()));
        if let Some(c) = self.cache.clone() {
            supervisor.spawn(
                "read cache",
                crate::cache::follow::run(
                    c,
                    self.read_pool.clone(),
                    hub.clone(),
                    log_id.clone(),
                    self.config.read_cache_bytes,
                    None,
                    stop.clone(),
                ),
            );
        }
        Ok(ReadSide { hub, cache, log_id })
    }

    /// The gRPC services (directory, watch, admin, health, reflection), with the health
    /// reporter started: its first status is set before the port serves, so no probe sees
    /// "unknown".
    async fn grpc_services(
        &self,
        supervisor: &Supervisor,
        readiness: Readiness,
        stop: &watch::Receiver<bool>,
        ReadSide { hub, cache, log_id }: ReadSide,
    ) -> anyhow::Result<(tonic::service::Routes, HealthReporter)> {
        let lender = crate::lender::Lender::new(
            db::session_options(&self.config.database).context("cannot read the database's connect options")?,
            read_share(self.config.max_connections) as usize,
            self.config.acquire_timeout,
        );
        let directory = grpc::directory::Directory::new(
            self.read_pool.clone(),
            std::sync::Arc::new(lender),
            log_id.clone(),
            cache.clone(),
            self.config.consistency_wait,
            self.config.billing_gates_permissions,
            self.config.entitlements,
        );
        let watcher = grpc::watch::Watcher::new(
            self.read_pool.clone(),
            hub,
            cache,
            log_id.clone(),
            self.config.watch.clone(),
            stop.clone(),
            self.metrics.clone(),
        );
        let destinations = grpc::destinations::Destinations {
            pool: self.pool.clone(),
            log_id: log_id.clone(),
            policy: self.config.outbound.policy.clone(),
            key: self.config.outbound.key.clone(),
        };
        let admin_service = grpc::admin::Admin::new(self.read_pool.clone(), destinations);
        let billing = grpc::billing::Billing::new(directory.clone(), self.config.entitlements);
        let (routes, health) = grpc::routes(directory, billing, watcher, admin_service, self.config.max_message_bytes)
            .await
            .context("cannot build the gRPC services")?;
        grpc::check_health(&health, &readiness, None).await;
        supervisor.spawn(
            "health reporter",
            grpc::report_health(health.clone(), readiness, self.config.health_interval, stop.clone()),
        );
        Ok((routes, health))
    }

    /// The gRPC server on `listener`: TLS if configured, the per-RPC timeout, metrics,
    /// authentication, then load shedding.
    fn serve_grpc(
        &self,
        supervisor: &Supervisor,
        listener: TcpListener,
        routes: tonic::service::Routes,
        tokens: Arc<crate::grpc::auth::Tokens>,
    ) -> anyhow::Result<()> {
        let web = self.config.grpc_web.as_ref();
        let grpc = grpc_builder(self.config.tls.as_ref())?
            // No tower-http TraceLayer here: it logs status messages, which may hold the key a
            // caller looked up (an email). Each RPC has a span of its own instead.
            .timeout(self.config.rpc_timeout)
            // gRPC-Web, when on: HTTP/1.1 too, CORS (answered before authentication, as a
            // preflight carries no token) for the origins named, an HTTP/1.1 request read whole
            // (so an early refusal reaches the client), then the translation to gRPC, so
            // everything inside sees a gRPC request.
            .accept_http1(web.is_some())
            .layer(tower::util::option_layer(web.and_then(grpc::web::cors)))
            .layer(tower::util::option_layer(
                web.map(|_| grpc::web::WholeRequestLayer::new(self.config.max_message_bytes)),
            ))
            .layer(tower::util::option_layer(web.map(|_| tonic_web::GrpcWebLayer::new())))
            .layer(RpcMetricsLayer(self.metrics.clone()))
            .layer(grpc::auth::AuthLayer(tokens))
            // Inside authentication: a request without a valid token never takes a slot.
            .layer(grpc::limit::ConcurrencyLimitLayer::new(self.config.max_concurrent_rpcs))
            .add_routes(routes)
            // TCP_NODELAY: without it a response written as two segments waits for the client's
            // delayed ACK (~40 ms a unary call; `bench lookup` found it). No vectored writes:
            // see `grpc::io`.
            .serve_with_incoming_shutdown(
                tokio_stream::StreamExt::map(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    |accepted| accepted.map(crate::grpc::io::Unvectored),
                ),
                supervisor.stopped(),
            );
        supervisor.spawn("gRPC server", grpc);
        Ok(())
    }

    /// The writers: the periodic reconcile (if configured) and the applier (if this replica
    /// runs one), sharing whether this replica leads.
    fn start_writers(&self, supervisor: &Supervisor, stop: &watch::Receiver<bool>, log_id: String) -> anyhow::Result<()> {
        let (leading_tx, leading_rx) = watch::channel(false);
        if let Some(r) = self.config.reconcile.clone() {
            let limiter = std::sync::Arc::new(crate::backfill::rate::RateLimiter::new(r.rate, r.window));
            let api = crate::backfill::ClerkApi::new(&r.api_url, &r.secret_key.0, limiter);
            supervisor.spawn(
                "periodic reconcile",
                crate::backfill::reconcile::periodically(
                    self.pool.clone(),
                    api.clone(),
                    r.every,
                    leading_rx.clone(),
                    stop.clone(),
                ),
            );
            supervisor.spawn(
                "plan listing",
                crate::backfill::plans::periodically(
                    self.pool.clone(),
                    api,
                    r.plans_every,
                    leading_rx.clone(),
                    stop.clone(),
                ),
            );
        }
        if let Some(applier_config) = self.config.applier.clone() {
            // Outbound webhooks are sent by the replica holding the applier lock (a replica
            // without an applier never holds it).
            supervisor.spawn(
                "outbound webhook sender",
                crate::outbound::sender::run(
                    self.pool.clone(),
                    log_id,
                    self.config.outbound.clone(),
                    leading_rx.clone(),
                    stop.clone(),
                ),
            );
            let options = db::connect_options(&self.config.database).context("the applier cannot connect")?;
            // It finishes the batch it is in when asked to stop.
            // On a thread of its own: its stretches of CPU (parsing and ruling a batch of 500
            // events takes tens of milliseconds) would otherwise hold up the webhooks and reads
            // queued on the same worker of the shared runtime, which is what made the acks' p99
            // with the applier running twice pgbench's (#27).
            supervisor.spawn_on_thread(
                "applier",
                applier::run(
                    options,
                    applier_config,
                    stop.clone(),
                    self.metrics.clone(),
                    leading_tx,
                ),
            );
        }
        Ok(())
    }
}

/// What the read services serve from: the change hub, the read cache and the change log's id.
struct ReadSide {
    hub: Hub,
    cache: crate::cache::ReadCache,
    log_id: String,
}

/// A gRPC server builder, with TLS (and client certificates, if a client CA is configured)
/// when `tls` is given.
fn grpc_builder(tls: Option<&crate::tls::TlsConfig>) -> anyhow::Result<tonic::transport::Server> {
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let mut tls_config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&tls.cert, &tls.key.0))
            .timeout(crate::tls::HANDSHAKE_TIMEOUT);
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(tls_config)
            .context("invalid TLS certificate or key")?;
    }
    Ok(builder)
}

/// The connections of each of the two read sides (the read pool, the point reads' lender).
fn read_share(max_connections: u32) -> u32 {
    (max_connections / 2).max(1)
}
