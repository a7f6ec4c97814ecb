//! OpenTelemetry: `serve --otlp-endpoint` exports its spans over OTLP/gRPC to a collector (an
//! in-test receiver here): a webhook's ingest with its verification and its wait for the group
//! commit as children, the group commit and the applier's batch linked to every webhook they
//! serve, the hub's fan-out of each change and its delivery to an outbound webhook destination
//! continuing its webhook's trace, each RPC. A bad endpoint stops `serve` with what to give. (That no exported attribute
//! holds an email, a token or a payload is checked by the log scan, `logs.rs`.)

use std::sync::{Arc, Mutex};

use clerk_mirror::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::events::*;
use crate::helpers::*;
use crate::process::*;

/// An OTLP/gRPC trace collector that keeps every export it receives.
#[derive(Clone, Default)]
pub struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Starts one on 127.0.0.1; returns its URL for `--otlp-endpoint`.
    pub async fn start() -> (String, Receiver) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (url, receiver)
    }

    /// Every span received.
    pub fn spans(&self) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter().cloned())
            .collect()
    }

    /// Everything received, spelled out (resources, spans, attributes, events, links): what a
    /// scan for secrets reads.
    pub fn dump(&self) -> String {
        format!("{:?}", self.requests.lock().unwrap())
    }

    /// The `service.name` of every export.
    fn service_names(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .filter_map(|r| r.resource.as_ref())
            .flat_map(|r| r.attributes.iter())
            .filter(|a| a.key == "service.name")
            .filter_map(|a| text(a.value.as_ref()?.value.as_ref()?))
            .collect()
    }
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Attribute `key` of `span`, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn serve_exports_one_trace_from_a_webhook_to_its_fan_out_and_outbound_delivery_with_the_commit_and_batch_linked_and_each_rpc() {
    let (cluster, name) = shared_database().await;
    let pool = sqlx::PgPool::connect_with(cluster.connect_options(&name)).await.unwrap();
    let (url, receiver) = Receiver::start().await;
    let mut args = serve_args(cluster, &name);
    let key = clerk_mirror::outbound::sealed::SealingKey::generate_text();
    args.extend(
        ["--otlp-endpoint", &url, "--destinations-key", &key, "--allow-private-destinations"].map(std::ffi::OsString::from),
    );
    let served = Served::start(&args).await;
    // An outbound webhook destination, which the change reaches too.
    let destination = crate::outbound::Receiver::start().await;
    let made = pb::admin_service_client::AdminServiceClient::connect(format!("http://{}", served.grpc_addr))
        .await
        .unwrap()
        .create_destination(pb::CreateDestinationRequest {
            destination: Some(pb::Destination {
                url: destination.url(),
                entity_types: vec![pb::EntityType::User as i32],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination
        .unwrap();
    destination.verify_with(&made.secret);
    // A watcher, which the change reaches.
    let mut watch = pb::watch_service_client::WatchServiceClient::connect(format!("http://{}", served.grpc_addr))
        .await
        .unwrap();
    let mut stream = watch
        .watch_changes(pb::WatchChangesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let body = user_event("created", "user_traced", T, T, "Ada");
    assert_eq!(served.send_as("msg_traced", &body).await.status, hyper::StatusCode::OK);
    wait_until_applied(&pool).await;
    loop {
        let event = stream.message().await.unwrap().expect("the stream goes on").event;
        if let Some(pb::watch_changes_response::Event::Change(c)) = event {
            assert_eq!(c.operation, pb::Operation::Created as i32);
            break;
        }
    }
    drop(stream);
    destination.wait_for(1).await;
    let mut directory =
        pb::directory_service_client::DirectoryServiceClient::connect(format!("http://{}", served.grpc_addr))
            .await
            .unwrap();
    directory
        .get_user(pb::GetUserRequest {
            name: "users/user_traced".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Stopping sends what is still buffered.
    served.terminate().await;
    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let webhooks: Vec<&Span> = named(&spans, "POST /webhooks/clerk")
        .into_iter()
        .filter(|s| attribute(s, "svix_id").as_deref() == Some("msg_traced"))
        .collect();
    assert_eq!(webhooks.len(), 1, "one webhook span for msg_traced among {names:?}");
    let webhook = webhooks[0];
    assert_eq!(webhook.kind, SpanKind::Server as i32);
    assert_eq!(attribute(webhook, "event_type").as_deref(), Some("user.created"));
    assert_eq!(attribute(webhook, "status").as_deref(), Some("200"));
    let child = |name: &str| {
        named(&spans, name)
            .into_iter()
            .find(|s| s.trace_id == webhook.trace_id && s.parent_span_id == webhook.span_id)
            .unwrap_or_else(|| panic!("a `{name}` span under the webhook's among {names:?}"))
    };
    child("verify");
    let write = child("inbox_write");
    let commit = named(&spans, "inbox group commit")
        .into_iter()
        .find(|s| s.links.iter().any(|l| l.trace_id == write.trace_id && l.span_id == write.span_id))
        .unwrap_or_else(|| panic!("a group commit linked to the webhook's inbox_write among {names:?}"));
    assert_ne!(commit.trace_id, webhook.trace_id, "linked, not parented");
    assert!(attribute(commit, "rows").is_some());

    // The applier's batch links to the webhook; the hub's fan-out of its change continues the
    // webhook's trace: webhook → (batch, linked) → fan-out, in one trace.
    let batch = named(&spans, "apply batch")
        .into_iter()
        .find(|b| b.links.iter().any(|l| l.trace_id == webhook.trace_id && l.span_id == webhook.span_id))
        .unwrap_or_else(|| panic!("an applier batch linked to the webhook among {names:?}"));
    assert_ne!(batch.trace_id, webhook.trace_id, "linked, not parented");
    assert!(attribute(batch, "events").is_some_and(|n| n != "0"));
    let fan_out = child("fan out change");
    assert_eq!(attribute(fan_out, "entity_type").as_deref(), Some("user"));
    assert!(attribute(fan_out, "seq").is_some());
    assert!(
        attribute(fan_out, "receivers").is_some_and(|n| n.parse::<u64>().unwrap() >= 1),
        "the watcher's feed received it"
    );
    assert_eq!(named(&spans, "fan out change").len(), 1, "one per change per replica: {names:?}");
    let delivery = child("deliver to destination");
    assert_eq!(delivery.kind, SpanKind::Client as i32);
    assert_eq!(attribute(delivery, "changes").as_deref(), Some("1"));
    let stored: Option<String> =
        sqlx::query_scalar("SELECT trace_context FROM changes WHERE source = 'webhook:msg_traced'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        stored.as_deref().map(|t| t.split('-').take(3).collect::<Vec<_>>().join("-")),
        Some(format!("00-{}-{}", hex(&webhook.trace_id), hex(&webhook.span_id))),
        "the change keeps the webhook's trace context"
    );
    let rpc = named(&spans, "GetUser");
    assert_eq!(rpc.len(), 1, "{names:?}");
    assert_eq!(rpc[0].kind, SpanKind::Server as i32);
    assert!(receiver.service_names().iter().all(|n| n == "clerk-mirror"));
    assert!(!receiver.service_names().is_empty());
    pool.close().await;
}

#[tokio::test]
async fn a_bad_otlp_endpoint_stops_serve_with_what_to_give() {
    let (cluster, name) = shared_database().await;
    let mut args = serve_args(cluster, &name);
    args.extend(["--otlp-endpoint".into(), "not a url".into()]);
    let out = tokio::process::Command::new(binary())
        .arg("serve")
        .args(&args)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot export traces to `not a url`") && stderr.contains("--otlp-endpoint"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_its_collector_unreachable_serve_keeps_serving_and_logs_that_spans_are_lost() {
    let (cluster, name) = shared_database().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut args = serve_args(cluster, &name);
    args.extend(["--otlp-endpoint".into(), format!("http://{closed}").into()]);
    let served = Served::start(&args).await;
    let body = user_event("created", "user_untraced", T, T, "Ada");
    assert_eq!(served.send_as("msg_untraced", &body).await.status, hyper::StatusCode::OK);
    // Stopping tries to send the buffered spans, and says it could not.
    let log = served.terminate().await.join("\n");
    let line = log
        .lines()
        .find(|l| l.contains("BatchSpanProcessor.ExportError"))
        .unwrap_or_else(|| panic!("a log line saying the spans were lost:\n{log}"));
    assert!(line.contains("Connection refused") || line.contains("Unavailable"), "{line}");
}
