//! `Application::build` connects, migrates and binds every port; `run_until_stopped` serves
//! until the shutdown signal it is given, then drains in-flight webhooks before returning.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::hub::Hub;
use crate::ingest::{InboxWriter, IngestState};
use crate::metrics::{Metrics, RpcMetricsLayer};
use crate::{admin, applier, db, grpc, http_server, ingest, store};

/// A built, bound, not yet serving server.
pub struct Application {
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    http: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
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
        let pool = db::connect(&config).await.context("cannot connect to the database")?;
        db::migrate(&pool)
            .await
            .context("cannot apply the database migrations")?;
        let read_pool = db::connect(&config).await.context("cannot connect to the database")?;
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
            metrics,
            cache,
            http_addr: http.local_addr()?,
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            http,
            grpc,
            admin,
            admin_tls,
            pool,
            read_pool,
            config,
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
        self.cache.clone()
    }

    /// The application's pool.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Serves until `shutdown` completes; then stops accepting, lets in-flight requests finish
    /// (every acknowledged webhook is committed) and returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stop_rx_for_applier = stop_rx.clone();
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };

        let metrics = self.metrics.clone();
        let (writer, writer_task) = InboxWriter::spawn(self.pool.clone(), self.config.ingest_batch_size);
        let state = IngestState {
            secrets: self.config.webhook_secrets.clone(),
            writer,
            pool: self.pool.clone(),
            max_body_bytes: self.config.max_body_bytes,
            metrics: metrics.clone(),
        };
        let http_router = ingest::router(state).layer(tower_http::trace::TraceLayer::new_for_http());
        let limits = self.config.http_limits;
        let http = http_server::serve(self.http, http_router, None, limits, stopped());
        let tokens = Arc::new(self.config.tokens.clone());
        let admin = http_server::serve(
            self.admin,
            admin::router(metrics.clone(), self.read_pool.clone(), tokens.clone()),
            self.admin_tls.clone(),
            limits,
            stopped(),
        );

        let log_id = store::read::log_id(&self.read_pool)
            .await
            .context("cannot read the change log's id")?;
        let (hub, hub_task) = Hub::spawn(
            self.read_pool.clone(),
            self.config.hub_capacity,
            self.config.hub_poll,
            stop_rx_for_applier.clone(),
            metrics.clone(),
        )
        .await
        .context("cannot start the change hub")?;
        // The read cache loads in the background: readiness does not wait for it, and reads go
        // to PostgreSQL until it is loaded.
        let cache = self
            .cache
            .clone()
            .unwrap_or_else(|| crate::cache::ReadCache::new(metrics.clone()));
        let cache_task = self.cache.clone().map(|c| {
            tokio::spawn(crate::cache::follow::run(
                c,
                self.read_pool.clone(),
                hub.clone(),
                log_id.clone(),
                self.config.read_cache_bytes,
                None,
                stop_rx_for_applier.clone(),
            ))
        });
        let directory = grpc::directory::Directory::new(
            self.read_pool.clone(),
            log_id.clone(),
            cache,
            self.config.consistency_wait,
        );
        let watcher = grpc::watch::Watcher::new(
            self.read_pool.clone(),
            hub,
            log_id,
            self.config.watch.clone(),
            stop_rx_for_applier.clone(),
            metrics.clone(),
        );
        let admin_service = grpc::admin::Admin::new(self.read_pool.clone());
        let (routes, health) = grpc::routes(directory, watcher, admin_service, self.config.max_message_bytes)
            .await
            .context("cannot build the gRPC services")?;
        // The first status is set before the port serves, so no probe sees "unknown".
        grpc::check_health(&health, &self.read_pool, None).await;
        let health_task = tokio::spawn(grpc::report_health(
            health,
            self.read_pool.clone(),
            self.config.health_interval,
            stop_rx_for_applier.clone(),
        ));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.config.tls {
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
        let grpc = builder
            // No tower-http TraceLayer here: it logs status messages, which may hold the key a
            // caller looked up (an email). Each RPC has a span of its own instead.
            .timeout(self.config.rpc_timeout)
            .layer(RpcMetricsLayer(metrics.clone()))
            .layer(grpc::auth::AuthLayer(tokens))
            // Inside authentication: a request without a valid token never takes a slot.
            .layer(grpc::limit::ConcurrencyLimitLayer::new(self.config.max_concurrent_rpcs))
            .add_routes(routes)
            // TCP_NODELAY: without it a response written as two segments waits for the client's
            // delayed ACK (~40 ms a unary call; `bench lookup` found it).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                stopped(),
            );

        let (leading_tx, leading_rx) = watch::channel(false);
        let reconcile = self.config.reconcile.clone().map(|r| {
            let limiter = std::sync::Arc::new(crate::backfill::rate::RateLimiter::new(r.rate, r.window));
            let api = crate::backfill::ClerkApi::new(&r.api_url, &r.secret_key.0, limiter);
            tokio::spawn(crate::backfill::reconcile::periodically(
                self.pool.clone(),
                api,
                r.every,
                leading_rx.clone(),
                stop_rx_for_applier.clone(),
            ))
        });
        let applier = self.config.applier.clone().map(|applier_config| {
            let options = db::connect_options(&self.config.database);
            let pool = self.pool.clone();
            let stop = stop_rx_for_applier.clone();
            let metrics = metrics.clone();
            let leading = leading_tx.clone();
            tokio::spawn(async move {
                match options {
                    Ok(options) => applier::run(options, pool, applier_config, stop, metrics, leading).await,
                    Err(e) => tracing::error!(error = %e, "the applier cannot connect"),
                }
            })
        });

        info!(http = %self.http_addr, grpc = %self.grpc_addr, admin = %self.admin_addr, "serving");
        let timeout = self.config.shutdown_timeout;
        let (pool, read_pool) = (self.pool.clone(), self.read_pool.clone());
        let (pool_for_drain, read_pool_for_drain) = (self.pool.clone(), self.read_pool.clone());
        let drain = async move {
            let (http, admin, grpc) = tokio::join!(
                async { http.await.context("the HTTP server failed") },
                async { admin.await.context("the admin server failed") },
                async { grpc.await.context("the gRPC server failed") },
            );
            // Every handler is done: the writer's last handle drops with the router; wait for it.
            writer_task.await.context("the inbox writer failed")?;
            let _ = health_task.await;
            let _ = hub_task.await;
            if let Some(cache_task) = cache_task {
                let _ = cache_task.await;
            }
            if let Some(reconcile) = reconcile {
                reconcile.abort();
            }
            // The applier finishes the batch it is in.
            if let Some(applier) = applier {
                applier.await.context("the applier failed")?;
            }
            pool_for_drain.close().await;
            read_pool_for_drain.close().await;
            info!("stopped");
            http.and(admin).and(grpc)
        };
        // Once asked to stop, everything has `timeout` to finish.
        let deadline = async {
            stopped().await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            result = drain => result,
            () = deadline => {
                tracing::error!(?timeout, "shutdown did not finish in time; stopping anyway");
                pool.close().await;
                read_pool.close().await;
                anyhow::bail!("shutdown did not finish within {timeout:?}")
            }
        }
    }
}
