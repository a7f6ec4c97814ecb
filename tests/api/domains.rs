//! Organization domains: listed by organization and across organizations ("which organizations
//! own acme.com, verified"), a delete that names no organization, an organization's delete ending
//! its domains, and organization-scoped watches.

use std::time::Duration;

use clerk_mirror::pb;
use clerk_mirror::pb::directory_service_client::DirectoryServiceClient;
use clerk_mirror::pb::watch_changes_response::Event;
use clerk_mirror::pb::watch_service_client::WatchServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;

async fn client(app: &TestApp) -> DirectoryServiceClient<Channel> {
    DirectoryServiceClient::connect(format!("http://{}", app.grpc_addr))
        .await
        .expect("connect")
}

/// The ids ListDomains answers under `parent` with `filter`.
async fn listed(c: &mut DirectoryServiceClient<Channel>, parent: &str, filter: &str, show_deleted: bool) -> Vec<String> {
    c.list_domains(pb::ListDomainsRequest {
        parent: parent.into(),
        filter: filter.into(),
        show_deleted,
        ..Default::default()
    })
    .await
    .expect("ListDomains")
    .into_inner()
    .domains
    .into_iter()
    .map(|d| d.id)
    .collect()
}

#[tokio::test]
async fn the_organizations_owning_a_verified_domain_are_one_list_away() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        org_event("created", "org_a", T, T, "A"),
        org_event("created", "org_b", T, T, "B"),
        domain_event("created", "orgdmn_a", "org_a", "Acme.com", Some("verified"), T),
        // Several organizations may hold one domain; only one verified it.
        domain_event("created", "orgdmn_b", "org_b", "acme.com", Some("unverified"), T),
        domain_event("created", "orgdmn_c", "org_b", "other.org", None, T),
    ])
    .await;
    let mut c = client(&app).await;
    assert_eq!(listed(&mut c, "organizations/-", r#"domain = "acme.com""#, false).await, ["orgdmn_a", "orgdmn_b"]);
    assert_eq!(
        listed(&mut c, "organizations/-", r#"domain = "acme.com" AND verification_status = "verified""#, false).await,
        ["orgdmn_a"]
    );
    assert_eq!(listed(&mut c, "organizations/org_b", "", false).await, ["orgdmn_b", "orgdmn_c"]);
    let one = c
        .list_domains(pb::ListDomainsRequest {
            parent: "organizations/org_a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .domains
        .remove(0);
    assert_eq!(
        (
            one.name.as_str(),
            one.domain.as_str(),
            one.enrollment_mode.as_str(),
            one.verification_status.as_str(),
            one.affiliation_email_address.as_str()
        ),
        ("organizations/org_a/domains/orgdmn_a", "acme.com", "automatic_invitation", "verified", "admin@Acme.com")
    );
    // The affiliation verification's newer field wins over the deprecated one.
    let mut newer = domain("orgdmn_c", "org_b", "other.org", Some("unverified"), T + 5);
    newer["affiliation_verification"] = serde_json::json!({"status": "verified", "strategy": "email_code"});
    app.send_all_and_apply(&[envelope("organizationDomain.updated", T + 5, newer)]).await;
    assert_eq!(
        listed(&mut c, "organizations/-", r#"verification_status = "verified""#, false).await,
        ["orgdmn_a", "orgdmn_c"]
    );
    for (parent, filter) in [("org_a", ""), ("organizations/-", "first_name = \"x\"")] {
        let e = c
            .list_domains(pb::ListDomainsRequest {
                parent: parent.into(),
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{parent} {filter}: {e:?}");
        assert!(e.get_details_error_info().is_some());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_domain_delete_names_no_organization_and_an_organizations_delete_ends_its_domains() {
    let app = spawn_app().await;
    app.send_all_and_apply(&[
        org_event("created", "org_d", T, T, "D"),
        domain_event("created", "orgdmn_1", "org_d", "one.example", Some("verified"), T),
        domain_event("created", "orgdmn_2", "org_d", "two.example", Some("verified"), T),
        // Deleted before its create arrives: the tombstone learns its organization from it.
        domain_deleted("orgdmn_3", T + 1),
        domain_event("created", "orgdmn_3", "org_d", "three.example", Some("verified"), T),
        domain_deleted("orgdmn_1", T + 10),
    ])
    .await;
    let mut c = client(&app).await;
    assert_eq!(listed(&mut c, "organizations/org_d", "", false).await, ["orgdmn_2"]);
    assert_eq!(listed(&mut c, "organizations/org_d", "", true).await, ["orgdmn_1", "orgdmn_2", "orgdmn_3"]);
    app.send_all_and_apply(&[org_deleted("org_d", T + 20)]).await;
    assert!(listed(&mut c, "organizations/-", "", false).await.is_empty());
    let ended: Vec<(String, String)> = sqlx::query_as(
        "SELECT entity_id, operation FROM changes WHERE entity_type = 'domain' AND seq > (SELECT max(seq) - 2 FROM changes)
          ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(ended, [("orgdmn_2".to_string(), "deleted".to_string())], "one change per ended domain");
    app.stop().await;
}

#[tokio::test]
async fn an_organizations_watch_carries_its_domains_changes_and_no_others() {
    let app = spawn_app().await;
    let mut w = WatchServiceClient::connect(format!("http://{}", app.grpc_addr)).await.unwrap();
    let mut stream = w
        .watch_changes(pb::WatchChangesRequest {
            organization_id: "org_w".into(),
            entity_types: vec![pb::EntityType::Domain as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    app.send_all_and_apply(&[
        domain_event("created", "orgdmn_x", "org_x", "x.example", None, T),
        domain_event("created", "orgdmn_w", "org_w", "w.example", Some("verified"), T),
        domain_deleted("orgdmn_w", T + 5),
    ])
    .await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        if let Some(Event::Change(c)) = m.event {
            let operation = c.operation();
            let Some(pb::change::Entity::Domain(d)) = c.entity else {
                panic!("a domain: {c:?}")
            };
            got.push((d.id, operation, d.organization_id));
        }
    }
    use pb::Operation as O;
    assert_eq!(
        got,
        [("orgdmn_w".into(), O::Created, "org_w".into()), ("orgdmn_w".into(), O::Deleted, "org_w".into())],
        "the delete keeps the organization it names none of"
    );
    app.stop().await;
}
