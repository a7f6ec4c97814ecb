//! Serves a router on the webhook and the admin port: HTTP/1.1 only (what Svix and Prometheus
//! speak), optionally over TLS (rustls; mTLS when the configuration requires client
//! certificates), with bounded request heads: at most `max_headers` fields and
//! `max_header_bytes` bytes (hyper answers 431 and closes the connection), sent within
//! `header_read_timeout`. On shutdown it stops accepting, lets in-flight requests finish and
//! closes idle connections, then returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Bounds on what a client may send before its request reaches a handler.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Most header fields in one request (more: 431).
    pub max_headers: usize,
    /// Most bytes in one request's head: the request line and every header (more: 431).
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head before the connection is closed.
    pub header_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_headers: 100,
            max_header_bytes: 16 * 1024,
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module doc).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .header_read_timeout(limits.header_read_timeout);
    // Every connection task holds a receiver: once they are all gone, the drain is over.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            tls.clone(),
            builder.clone(),
            router.clone(),
            stop_rx.clone(),
        ));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}

/// Completes once the server stops (the guard `wait_for` returns is not held across awaits).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// One connection: the TLS handshake (when configured), then HTTP/1.1 until either side ends it.
async fn connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: http1::Builder,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = tls else {
        return http(stream, &builder, router, &mut stop).await;
    };
    let handshake = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            // A client without an acceptable certificate, or one speaking plain HTTP.
            Ok(Err(e)) => {
                debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return;
            }
        },
        () = stopping(&mut stop) => return,
    };
    http(stream, &builder, router, &mut stop).await
}

async fn http<I>(io: I, builder: &http1::Builder, router: axum::Router, stop: &mut watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        // Oversized heads (431), header timeouts, clients that went away.
        debug!(error = %e, "HTTP connection ended with an error");
    }
}
