//! Reflection (v1 and v1alpha) exactly as grpcurl and `buf curl` use it, error details decoded
//! through it alone, and the health service, which follows the database.

use std::collections::HashMap;

use futures::StreamExt;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1 as r1;
use tonic_reflection::pb::v1alpha as r1a;

use crate::helpers::*;

async fn ask_v1(
    app: &TestApp,
    request: r1::server_reflection_request::MessageRequest,
) -> r1::server_reflection_response::MessageResponse {
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(channel(app).await);
    let req = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap().message_response.unwrap()
}

async fn ask_v1alpha(
    app: &TestApp,
    request: r1a::server_reflection_request::MessageRequest,
) -> r1a::server_reflection_response::MessageResponse {
    let mut client = r1a::server_reflection_client::ServerReflectionClient::new(channel(app).await);
    let req = r1a::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap().message_response.unwrap()
}

async fn channel(app: &TestApp) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn file_names(protos: &[Vec<u8>]) -> Vec<String> {
    protos
        .iter()
        .map(|b| {
            prost_types::FileDescriptorProto::decode(b.as_slice())
                .unwrap()
                .name()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn reflection_v1_lists_describes_and_serves_every_transitive_import() {
    use r1::server_reflection_request::MessageRequest as Q;
    use r1::server_reflection_response::MessageResponse as A;
    let app = spawn_app().await;
    let A::ListServicesResponse(list) = ask_v1(&app, Q::ListServices(String::new())).await else {
        panic!("not a list")
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "clerkmirror.v1.DirectoryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.contains(&expected), "{expected} missing from {services:?}");
    }
    let A::FileDescriptorResponse(files) =
        ask_v1(&app, Q::FileContainingSymbol("clerkmirror.v1.DirectoryService".into())).await
    else {
        panic!("no file")
    };
    let names = file_names(&files.file_descriptor_proto);
    assert!(
        names.contains(&"clerkmirror/v1/directory.proto".to_string()),
        "{names:?}"
    );
    let A::FileDescriptorResponse(files) = ask_v1(&app, Q::FileByFilename("google/protobuf/struct.proto".into())).await
    else {
        panic!("no struct.proto")
    };
    assert_eq!(
        file_names(&files.file_descriptor_proto)[0],
        "google/protobuf/struct.proto"
    );
    let A::FileDescriptorResponse(_) = ask_v1(&app, Q::FileContainingSymbol("clerkmirror.v1.User".into())).await else {
        panic!()
    };
    // An unknown symbol is NOT_FOUND (tonic-reflection ends the stream with that status).
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(channel(&app).await);
    let req = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(Q::FileContainingSymbol("clerkmirror.v1.Nope".into())),
    };
    let mut stream = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.next().await.unwrap();
    match answer {
        Err(status) => assert_eq!(status.code(), Code::NotFound),
        Ok(r) => {
            assert!(matches!(r.message_response, Some(A::ErrorResponse(e)) if e.error_code == Code::NotFound as i32))
        }
    }
    app.stop().await;
}

/// What a reflection client asks for: the file defining a symbol, or a file by name.
enum Ask {
    Symbol(String),
    File(String),
}

/// The files reflection v1 answers `ask` with.
async fn files_v1(app: &TestApp, ask: Ask) -> Vec<Vec<u8>> {
    use r1::server_reflection_request::MessageRequest as Q;
    use r1::server_reflection_response::MessageResponse as A;
    let request = match ask {
        Ask::Symbol(s) => Q::FileContainingSymbol(s),
        Ask::File(f) => Q::FileByFilename(f),
    };
    match ask_v1(app, request).await {
        A::FileDescriptorResponse(files) => files.file_descriptor_proto,
        other => panic!("not a file: {other:?}"),
    }
}

/// The files reflection v1alpha answers `ask` with.
async fn files_v1alpha(app: &TestApp, ask: Ask) -> Vec<Vec<u8>> {
    use r1a::server_reflection_request::MessageRequest as Q;
    use r1a::server_reflection_response::MessageResponse as A;
    let request = match ask {
        Ask::Symbol(s) => Q::FileContainingSymbol(s),
        Ask::File(f) => Q::FileByFilename(f),
    };
    match ask_v1alpha(app, request).await {
        A::FileDescriptorResponse(files) => files.file_descriptor_proto,
        other => panic!("not a file: {other:?}"),
    }
}

/// What grpcurl does with a detail's type URL: the file containing the symbol, then every import
/// by file name until none is missing. The pool holds only what reflection served (an empty pool
/// knows no well-known type either), and the name of the file that defines `symbol`.
async fn resolve_by_reflection(symbol: &str, fetch: impl AsyncFn(Ask) -> Vec<Vec<u8>>) -> (DescriptorPool, String) {
    let mut files: HashMap<String, prost_types::FileDescriptorProto> = HashMap::new();
    let mut first = None;
    let mut wanted = vec![Ask::Symbol(symbol.to_string())];
    while let Some(ask) = wanted.pop() {
        for bytes in fetch(ask).await {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            first.get_or_insert_with(|| file.name().to_string());
            for import in &file.dependency {
                if !files.contains_key(import) && import != file.name() {
                    wanted.push(Ask::File(import.clone()));
                }
            }
            files.insert(file.name().to_string(), file);
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_values())
        .expect("reflection served every import");
    (pool, first.expect("a file"))
}

/// An error's details as grpcurl prints them: each `Any` of the `google.rpc.Status` (which
/// grpcurl knows) decoded by the message its type URL names, found in `pool`, as protobuf JSON.
fn details_as_json(pool: &DescriptorPool, status: &tonic::Status) -> Vec<(String, Value)> {
    let rpc = tonic_types::pb::Status::decode(status.details()).expect("a google.rpc.Status");
    rpc.details
        .iter()
        .map(|any| {
            let name = any
                .type_url
                .strip_prefix("type.googleapis.com/")
                .unwrap_or_else(|| panic!("type URL {}", any.type_url));
            let descriptor = pool
                .get_message_by_name(name)
                .unwrap_or_else(|| panic!("{name} is not recognized"));
            let message = DynamicMessage::decode(descriptor, any.value.as_slice()).unwrap();
            (name.to_string(), serde_json::to_value(&message).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn error_details_decode_through_reflection_alone_over_v1_and_v1alpha_as_grpcurl_decodes_them() {
    use tonic_types::StatusExt;
    let app = spawn_app().await;
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    let get = |name: &str| clerk_mirror::pb::GetUserRequest {
        name: name.into(),
        ..Default::default()
    };
    // Real errors from the server: a NOT_FOUND (ErrorInfo with the read's cursor) and an
    // INVALID_ARGUMENT (ErrorInfo and BadRequest); and the server's own encoding of a RetryInfo.
    let missing = c.get_user(get("users/user_nobody")).await.unwrap_err();
    let invalid = c.get_user(get("user_nobody")).await.unwrap_err();
    let retry = tonic::Status::from(clerk_mirror::grpc::error::ApiError::NotYetConsistent {
        replica_cursor: "replica".into(),
        requested_cursor: "requested".into(),
    });
    let cursor = missing.get_details_error_info().unwrap().metadata["cursor"].clone();
    assert!(!cursor.is_empty());
    let violation = invalid.get_details_bad_request().unwrap().field_violations[0].clone();

    for version in ["v1", "v1alpha"] {
        let (pool, file) = if version == "v1" {
            resolve_by_reflection("google.rpc.ErrorInfo", async |ask| files_v1(&app, ask).await).await
        } else {
            resolve_by_reflection("google.rpc.ErrorInfo", async |ask| files_v1alpha(&app, ask).await).await
        };
        assert_eq!(file, "google/rpc/error_details.proto", "{version}");
        assert!(
            pool.get_file_by_name("google/protobuf/duration.proto").is_some(),
            "{version}: RetryInfo's import"
        );
        assert_eq!(
            details_as_json(&pool, &missing),
            [(
                "google.rpc.ErrorInfo".to_string(),
                json!({"reason": "RESOURCE_NOT_FOUND", "domain": "clerkmirror",
                       "metadata": {"resourceName": "users/user_nobody", "cursor": cursor}})
            )],
            "{version}"
        );
        assert_eq!(
            details_as_json(&pool, &invalid),
            [
                (
                    "google.rpc.ErrorInfo".to_string(),
                    json!({"reason": "INVALID_NAME", "domain": "clerkmirror", "metadata": {"field": "name"}})
                ),
                (
                    "google.rpc.BadRequest".to_string(),
                    json!({"fieldViolations": [{"field": "name", "description": violation.description}]})
                ),
            ],
            "{version}"
        );
        assert_eq!(
            details_as_json(&pool, &retry),
            [
                ("google.rpc.RetryInfo".to_string(), json!({"retryDelay": "0.100s"})),
                (
                    "google.rpc.ErrorInfo".to_string(),
                    json!({"reason": "NOT_YET_CONSISTENT", "domain": "clerkmirror",
                           "metadata": {"replicaCursor": "replica", "requestedCursor": "requested"}})
                ),
            ],
            "{version}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_serves_older_clients_too() {
    use r1a::server_reflection_request::MessageRequest as Q;
    use r1a::server_reflection_response::MessageResponse as A;
    let app = spawn_app().await;
    let A::ListServicesResponse(list) = ask_v1alpha(&app, Q::ListServices(String::new())).await else {
        panic!()
    };
    assert!(list.service.iter().any(|s| s.name == "clerkmirror.v1.DirectoryService"));
    let A::FileDescriptorResponse(files) =
        ask_v1alpha(&app, Q::FileContainingSymbol("clerkmirror.v1.DirectoryService".into())).await
    else {
        panic!()
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let A::FileDescriptorResponse(files) =
        ask_v1alpha(&app, Q::FileByFilename("google/protobuf/timestamp.proto".into())).await
    else {
        panic!()
    };
    assert_eq!(
        file_names(&files.file_descriptor_proto)[0],
        "google/protobuf/timestamp.proto"
    );
    app.stop().await;
}

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(app).await);
    let r = client
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

async fn wait_for_health(app: &TestApp, want: ServingStatus) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while health(app, "").await != want {
        assert!(std::time::Instant::now() < deadline, "health never became {want:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_is_serving_and_follows_the_database_down_and_back_up() {
    let mut cluster = start_cluster("health").await;
    let name = fresh_database(&cluster).await;
    let app = spawn_app_on(&cluster, &name, |_| {}).await;
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&app, "clerkmirror.v1.DirectoryService").await,
        ServingStatus::Serving
    );
    app.pool.close().await;
    cluster.stop().await.unwrap();
    wait_for_health(&app, ServingStatus::NotServing).await;
    // Reads of the database fail with UNAVAILABLE (retryable), never with a cause that leaks
    // internals. (Reads from the replica's memory go on answering: see faults.rs.)
    let mut c = clerk_mirror::pb::directory_service_client::DirectoryServiceClient::connect(format!(
        "http://{}",
        app.grpc_addr
    ))
    .await
    .unwrap();
    let e = c
        .get_user(clerk_mirror::pb::GetUserRequest {
            name: "users/user_1".into(),
            show_deleted: false,
            consistency: Some(clerk_mirror::pb::Consistency {
                requirement: Some(clerk_mirror::pb::consistency::Requirement::FullyConsistent(true)),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.message(), "the database is unavailable; retry later");
    let _cluster = restart_cluster(&cluster).await;
    wait_for_health(&app, ServingStatus::Serving).await;
    let e = c
        .get_user(clerk_mirror::pb::GetUserRequest {
            name: "users/user_1".into(),
            show_deleted: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
}
