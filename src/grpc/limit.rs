//! Load shedding for the gRPC port: at most `limit` RPCs in flight at once across every
//! connection. One more is refused at once with `RESOURCE_EXHAUSTED` (`TOO_MANY_REQUESTS`),
//! never queued, so a burst cannot pile up memory or latency. A request holds its slot until its
//! response starts: all of a unary RPC's work, and a stream's setup (open streams are bounded by
//! the watcher limit instead). Health checks never wait for a slot: probes see the truth while the
//! server is busy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

use super::error::ApiError;

/// The tower layer; its clones (one per connection) share the slots.
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl ConcurrencyLimitLayer {
    pub fn new(limit: usize) -> Self {
        ConcurrencyLimitLayer {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower::Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            limit: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limit: ConcurrencyLimitLayer,
}

impl<S, B> tower::Service<http::Request<B>> for ConcurrencyLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with("/grpc.health.") {
            return Box::pin(self.inner.call(request));
        }
        match self.limit.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    drop(slot);
                    response
                })
            }
            Err(_) => {
                let status = tonic::Status::from(ApiError::TooManyRequests {
                    limit: self.limit.limit,
                });
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
