//! Reflection (v1 and v1alpha) exactly as grpcurl and `buf curl` use it, and the health service,
//! which follows the database.

use futures::StreamExt;
use prost::Message;
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
