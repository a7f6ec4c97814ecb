//! gRPC-Web on the gRPC port, spoken by hand over HTTP/1.1 (what an edge runtime without HTTP/2
//! trailers sends): off by default; unary calls and the watch with and without a token; an
//! error's `ErrorInfo` in the trailer frame; CORS only for the origins named.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clerk_mirror::config::GrpcWebConfig;
use clerk_mirror::grpc::auth::{Token, Tokens};
use clerk_mirror::pb;
use clerk_mirror::pb::watch_changes_response::Event;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

const READER: &str = "reader-secret-web-0123456789";
const ORIGIN: &str = "https://app.example.com";

fn web_app_config(config: &mut clerk_mirror::config::Config, origins: &[&str]) {
    config.tokens = Tokens {
        readers: vec![Token::parse(&format!("edge={READER}")).unwrap()],
        admins: vec![],
    };
    config.grpc_web = Some(GrpcWebConfig {
        cors_origins: origins.iter().map(|o| o.to_string()).collect(),
    });
}

/// A gRPC-Web request: one length-prefixed message, over HTTP/1.1.
fn request(app: &TestApp, path: &str, token: Option<&str>, message: &impl Message) -> Request<Full<Bytes>> {
    let encoded = message.encode_to_vec();
    let mut body = BytesMut::with_capacity(5 + encoded.len());
    body.put_u8(0);
    body.put_u32(encoded.len() as u32);
    body.put_slice(&encoded);
    let mut builder = Request::post(format!("http://{}{path}", app.grpc_addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Full::new(body.freeze())).unwrap()
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A gRPC-Web response read frame by frame: messages, then the trailers.
struct Frames {
    body: hyper::body::Incoming,
    buffer: BytesMut,
}

enum Frame {
    Message(Bytes),
    Trailers(HeaderMap),
}

impl Frames {
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes(self.buffer[1..5].try_into().unwrap()) as usize;
                if self.buffer.len() >= 5 + len {
                    let flag = self.buffer.get_u8();
                    self.buffer.advance(4);
                    let payload = self.buffer.split_to(len).freeze();
                    return Some(match flag & 0x80 {
                        0 => Frame::Message(payload),
                        _ => Frame::Trailers(parse_trailers(&payload)),
                    });
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a gRPC-Web frame within 10 s")?
                .expect("the body reads");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    /// Every message until the trailers, and the trailers.
    async fn all(mut self) -> (Vec<Bytes>, HeaderMap) {
        let mut messages = Vec::new();
        while let Some(frame) = self.next().await {
            match frame {
                Frame::Message(m) => messages.push(m),
                Frame::Trailers(t) => return (messages, t),
            }
        }
        panic!("the response ended without a trailer frame");
    }
}

fn parse_trailers(block: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in std::str::from_utf8(block).expect("trailers are text").split("\r\n") {
        if let Some((name, value)) = line.split_once(':') {
            map.append(
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
    }
    map
}

/// Sends `request`; returns the HTTP status, the headers and the frame reader.
async fn call(request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Frames) {
    let response = client().request(request).await.expect("an HTTP/1.1 answer");
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        Frames {
            body,
            buffer: BytesMut::new(),
        },
    )
}

/// The call's gRPC status: from the headers when the answer was an error at once, else from the
/// trailer frame.
async fn unary(request: Request<Full<Bytes>>) -> (Vec<Bytes>, tonic::Status) {
    let (http_status, headers, frames) = call(request).await;
    assert_eq!(http_status, StatusCode::OK, "gRPC-Web answers errors with 200 and a grpc-status");
    if let Some(status) = tonic::Status::from_header_map(&headers) {
        return (Vec::new(), status);
    }
    let (messages, trailers) = frames.all().await;
    let status = tonic::Status::from_header_map(&trailers).expect("a grpc-status in the trailer frame");
    (messages, status)
}

#[tokio::test]
async fn grpc_web_is_off_by_default_and_an_http1_request_gets_no_grpc_answer() {
    let app = spawn_app().await;
    let answered = client()
        .request(request(&app, "/clerkmirror.v1.DirectoryService/GetUser", None, &pb::GetUserRequest {
            name: "users/user_web".into(),
            ..Default::default()
        }))
        .await;
    // The port speaks HTTP/2 only: the HTTP/1.1 request is not answered as gRPC.
    if let Ok(response) = answered {
        assert_ne!(response.status(), StatusCode::OK);
        assert!(response.headers().get("grpc-status").is_none());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_grpc_web_call_reads_a_user_with_a_token_and_is_refused_without_one() {
    let app = spawn_app_with(|c| web_app_config(c, &[])).await;
    app.send_all_and_apply(&[user_event("created", "user_web", T, T, "Ada")]).await;
    let get = pb::GetUserRequest {
        name: "users/user_web".into(),
        ..Default::default()
    };
    let path = "/clerkmirror.v1.DirectoryService/GetUser";

    let (messages, status) = unary(request(&app, path, Some(READER), &get)).await;
    assert_eq!(status.code(), tonic::Code::Ok, "{status:?}");
    assert_eq!(messages.len(), 1);
    let user = pb::GetUserResponse::decode(messages[0].clone()).unwrap().user.expect("a user");
    assert_eq!(user.id, "user_web");
    assert_eq!(user.first_name, "Ada");

    for token in [None, Some("not-the-reader-token-0000")] {
        let (messages, status) = unary(request(&app, path, token, &get)).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}: {status:?}");
        assert!(messages.is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_grpc_web_error_carries_its_error_info_in_the_trailers() {
    let app = spawn_app_with(|c| web_app_config(c, &[])).await;
    let (_, status) = unary(request(
        &app,
        "/clerkmirror.v1.DirectoryService/GetUser",
        Some(READER),
        &pb::GetUserRequest {
            name: "users/user_nobody".into(),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let info = status.get_error_details().error_info().cloned().expect("an ErrorInfo");
    assert_eq!(info.reason, "RESOURCE_NOT_FOUND");
    assert_eq!(info.domain, "clerkmirror");
    app.stop().await;
}

#[tokio::test]
async fn a_grpc_web_watch_streams_the_backlog_caught_up_and_live_changes() {
    let app = spawn_app_with(|c| web_app_config(c, &[])).await;
    app.send_all_and_apply(&[user_event("created", "user_web_1", T, T, "Ada")]).await;
    let watch = pb::WatchChangesRequest {
        start: Some(pb::watch_changes_request::Start::StartFromOldest(true)),
        ..Default::default()
    };
    let path = "/clerkmirror.v1.WatchService/WatchChanges";

    let (http_status, headers, mut frames) = call(request(&app, path, Some(READER), &watch)).await;
    assert_eq!(http_status, StatusCode::OK);
    assert!(headers.get("grpc-status").is_none(), "{headers:?}");
    let mut next_event = async || match frames.next().await.expect("a frame") {
        Frame::Message(m) => pb::WatchChangesResponse::decode(m).unwrap().event.expect("an event"),
        Frame::Trailers(t) => panic!("the stream ended: {t:?}"),
    };
    assert!(matches!(next_event().await, Event::Heartbeat(_)));
    let Event::Change(created) = next_event().await else { panic!("the backlog's change") };
    assert_eq!(created.operation, pb::Operation::Created as i32);
    assert!(matches!(next_event().await, Event::CaughtUp(_)));

    app.send_all_and_apply(&[user_event("updated", "user_web_1", T + 1, T + 1, "Augusta")])
        .await;
    let Event::Change(updated) = next_event().await else { panic!("the live change") };
    assert_eq!(updated.operation, pb::Operation::Updated as i32);
    assert!(updated.cursor > created.cursor);
    let Some(pb::change::Entity::User(user)) = updated.entity else { panic!("a user's state") };
    assert_eq!(user.first_name, "Augusta");

    // Without a token the stream is refused before it starts.
    let (_, status) = unary(request(&app, path, None, &watch)).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    app.stop().await;
}

/// A CORS preflight from `origin`.
fn preflight(app: &TestApp, origin: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://{}/clerkmirror.v1.DirectoryService/GetUser", app.grpc_addr))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,x-grpc-web")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn cors_is_answered_only_for_the_origins_named() {
    let app = spawn_app_with(|c| web_app_config(c, &[ORIGIN])).await;
    let (status, headers, _) = call(preflight(&app, ORIGIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
    for header in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allowed.contains(header), "{allowed}");
    }

    let mut get = request(&app, "/clerkmirror.v1.DirectoryService/GetUser", Some(READER), &pb::GetUserRequest {
        name: "users/user_nobody".into(),
        ..Default::default()
    });
    get.headers_mut().insert("origin", HeaderValue::from_static(ORIGIN));
    let (_, headers, _) = call(get).await;
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    let exposed = headers["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("grpc-status") && exposed.contains("grpc-status-details-bin"), "{exposed}");

    let (_, headers, _) = call(preflight(&app, "https://evil.example.com")).await;
    assert!(headers.get("access-control-allow-origin").is_none(), "{headers:?}");
    app.stop().await;

    // gRPC-Web without origins: no CORS headers for anyone.
    let app = spawn_app_with(|c| web_app_config(c, &[])).await;
    let (_, headers, _) = call(preflight(&app, ORIGIN)).await;
    assert!(headers.get("access-control-allow-origin").is_none(), "{headers:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_grpc_web_request_over_the_message_limit_is_refused_with_the_limit_and_the_flag() {
    let app = spawn_app_with(|c| {
        web_app_config(c, &[]);
        c.max_message_bytes = 1024;
    })
    .await;
    let (_, status) = unary(request(
        &app,
        "/clerkmirror.v1.DirectoryService/GetUser",
        Some(READER),
        &pb::GetUserRequest {
            name: format!("users/{}", "x".repeat(4096)),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--max-message-bytes"), "{}", status.message());
    let info = status.get_error_details().error_info().cloned().expect("an ErrorInfo");
    assert_eq!(info.reason, "REQUEST_TOO_LARGE");
    assert_eq!(info.metadata["limitBytes"], "1024");

    // Under the limit the same call is served.
    let (_, status) = unary(request(
        &app,
        "/clerkmirror.v1.DirectoryService/GetUser",
        Some(READER),
        &pb::GetUserRequest {
            name: "users/user_small".into(),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    app.stop().await;
}
