//! AIP-160 conformance of the filter language: public implementations' own test cases, adapted
//! to our fields (docs/filter-conformance.md cites each), run against one small population
//! through SQL (ListUsers) and in memory (as watches evaluate), which must agree with the table.

use clerk_mirror::filter::Filter;
use clerk_mirror::pb;
use clerk_mirror::store::{EntityType, UserRecord};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

use crate::events::*;
use crate::helpers::*;
use crate::lists::{client, list_all};

const AIP: &str = "aip-dev/google.aip.dev aip/general/0160.md";
const EBNF: &str = "aip-dev/google.aip.dev assets/misc/ebnf-filtering.txt";
const EINRIDE_PARSER: &str = "einride/aip-go filtering/parser_test.go";
const EINRIDE_CHECKER: &str = "einride/aip-go filtering/checker_test.go";
const SQLALCHEMY: &str = "rcleveng/sqlalchemy_aip160 tests/test_aip160_filter.py";
const DIESEL: &str = "comradesharf/diesel-aip-160 diesel-aip-160/src/compiler.rs";
const ZSHAINSKY: &str = "zshainsky/aip160 pkg/filter/parser/parser_test.go";
/// Where AIP-160 leaves the choice to the service (README, "The filter language").
const OURS: &str = "clerk-mirror";

/// What a filter must do: list exactly these users (by number: `user_c01` is 1), or be refused
/// with INVALID_FILTER at this byte position.
enum Expect {
    Users(&'static [u8]),
    Refused(usize),
}
use Expect::*;

/// (source, the suite's own case, ours, expected). Where a suite contradicts AIP-160's text the
/// expectation is the AIP's (docs/filter-conformance.md lists those rows).
#[rustfmt::skip]
const TABLE: &[(&str, &str, &str, Expect)] = &[
    // AIP-160's text.
    (AIP, "a AND b OR c", r#"banned = true AND first_name = "Ada" OR first_name = "Karin""#, Users(&[2, 9])),
    (AIP, "a AND (b OR c)", r#"banned = true AND (first_name = "Ada" OR first_name = "Karin")"#, Users(&[2, 9])),
    (AIP, "(a AND b) OR c: the other reading", r#"(banned = true AND first_name = "Ada") OR first_name = "Karin""#, Users(&[2, 3, 9])),
    (AIP, r#"a = "*.foo""#, r#"email = "*.org""#, Users(&[2, 8])),
    (AIP, r#"a = "*.foo""#, r#"last_name = "*ace""#, Users(&[1])),
    (AIP, "NOT a", "NOT banned = true", Users(&[1, 3, 4, 5, 6, 7, 8, 10])),
    (AIP, "-a", "-banned = true", Users(&[1, 3, 4, 5, 6, 7, 8, 10])),
    (AIP, "a != 42", "public_metadata.seats != 5", Users(&[2, 3, 4, 5, 6, 7, 8, 10])),
    (AIP, "a < 42", "public_metadata.seats < 42", Users(&[1, 4, 5, 9])),
    (AIP, r#"a > "foo""#, r#"last_name > "W""#, Users(&[4, 5, 7, 8, 10])),
    (AIP, "a >= 42", "public_metadata.seats >= 50", Users(&[2, 3])),
    (AIP, "r:42", r#"public_metadata.tags:"beta""#, Users(&[1, 3])),
    (AIP, "m:foo", r#"public_metadata:"plan""#, Users(&[1, 2, 3])),
    (AIP, "m.foo:*", "public_metadata.plan:*", Users(&[1, 2, 3])),
    (AIP, "m.foo:42", "public_metadata.seats:5", Users(&[1, 9])),
    (AIP, "2012-04-21T11:30:00-04:00 (UTC offsets)", r#"create_time = "2022-08-12T17:22:22-04:00""#, Users(&[1])),
    (AIP, "Victor Hugo (free text)", "Ada Lovelace", Refused(0)),
    (AIP, r#"a = "*.foo": an absent text field is """#, r#"first_name = "*""#, Users(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
    (AIP, r#"a = "*.foo": metadata strings only"#, r#"public_metadata.plan = "*""#, Users(&[1, 2, 3])),
    // AIP-160's EBNF.
    (EBNF, "a b AND c AND d", r#"first_name = "Ada" banned = false AND locked = false AND public_metadata.plan:*"#, Users(&[1])),
    (EBNF, "(a b) AND c AND d", r#"(first_name = "Ada" banned = false) AND locked = false AND public_metadata.plan:*"#, Users(&[1])),
    (EBNF, "New York Giants OR Yankees", r#"first_name = "Karin" last_name = "Boye" OR last_name = "Byron""#, Users(&[3])),
    (EBNF, "New York (Giants OR Yankees)", r#"first_name = "Karin" (last_name = "Boye" OR last_name = "Byron")"#, Users(&[3])),
    (EBNF, "(New York Giants) OR Yankees: the other reading", r#"(first_name = "Karin" last_name = "Boye") OR last_name = "Byron""#, Users(&[2, 3])),
    (EBNF, "a < 10 OR a >= 100", "public_metadata.seats < 10 OR public_metadata.seats >= 100", Users(&[1, 2, 4, 5, 9])),
    (EBNF, "NOT (a OR b)", r#"NOT (first_name = "Ada" OR first_name = "Karin")"#, Users(&[4, 5, 6, 7, 8, 10])),
    (EBNF, r#"-file:".java""#, r#"-public_metadata.tags:"beta""#, Users(&[2, 4, 5, 6, 7, 8, 9, 10])),
    (EBNF, "-30", "-30", Refused(0)),
    (EBNF, "package=com.google", "last_name=com.google", Refused(10)),
    (EBNF, "msg != 'hello'", "last_name != 'Boye'", Users(&[1, 2, 4, 5, 6, 7, 8, 9, 10])),
    (EBNF, "1 > 0", "1 > 0", Refused(0)),
    (EBNF, "yesterday < request.time", "create_time < update_time", Refused(14)),
    (EBNF, "map:key", "public_metadata:plan", Refused(16)),
    (EBNF, "prod", "prod", Refused(0)),
    (EBNF, "regex(m.key, '^.*prod.*$')", "regex(last_name, '^B')", Refused(0)),
    // einride/aip-go.
    (EINRIDE_PARSER, "a OR b OR c", r#"first_name = "Ada" OR first_name = "Karin" OR first_name = "Alan""#, Users(&[1, 2, 3, 6, 9])),
    (EINRIDE_PARSER, "New York Giants", "New York Giants", Refused(0)),
    (EINRIDE_PARSER, r#"msg != "\u263A\u263A""#, r#"first_name = "\u263A\u263A""#, Users(&[10])),
    (EINRIDE_PARSER, r#"msg != "\303\277""#, r#"last_name = "\303\277""#, Users(&[10])),
    (EINRIDE_PARSER, r#"msg != "\377""#, r#"last_name = "\377""#, Users(&[])),
    (EINRIDE_PARSER, r#"annotations.schedule = "test""#, r#"public_metadata.plan = "pro""#, Users(&[1])),
    (EINRIDE_PARSER, r#"a = "foo"#, r#"last_name = "foo"#, Refused(12)),
    (EINRIDE_PARSER, "<", "<", Refused(0)),
    (EINRIDE_PARSER, "(-2.5) >= -2.4", "(-2.5) >= -2.4", Refused(1)),
    (EINRIDE_PARSER, "foo >= (-2.4)", "public_metadata.seats >= (-2.4)", Refused(25)),
    (EINRIDE_CHECKER, r#"author = "Karin Boye" AND NOT read"#, r#"last_name = "Boye" AND NOT banned"#, Refused(27)),
    (EINRIDE_CHECKER, r#"create_time = "2022-08-12 22:22:22""#, r#"create_time = "2022-08-12 22:22:22""#, Refused(0)),
    (EINRIDE_CHECKER, r#"create_time = "2022-08-12T22:22:22+01:00""#, r#"create_time = "2022-08-12T22:22:22+01:00""#, Users(&[1])),
    (EINRIDE_CHECKER, r#"create_time != "2022-08-12T22:22:22+01:00""#, r#"create_time != "2022-08-12T22:22:22+01:00""#, Users(&[2, 3, 4, 5, 6, 7, 8, 9, 10])),
    (EINRIDE_CHECKER, r#"create_time < "2022-08-12T22:22:22+01:00""#, r#"create_time < "2022-08-12T22:22:22+01:00""#, Users(&[2])),
    (EINRIDE_CHECKER, r#"create_time > "2022-08-12T22:22:22+01:00""#, r#"create_time > "2022-08-12T22:22:22+01:00""#, Users(&[3, 4, 5, 6, 7, 8, 9, 10])),
    (EINRIDE_CHECKER, r#"create_time <= "2022-08-12T22:22:22+01:00""#, r#"create_time <= "2022-08-12T22:22:22+01:00""#, Users(&[1, 2])),
    (EINRIDE_CHECKER, r#"create_time >= "2022-08-12T22:22:22+01:00""#, r#"create_time >= "2022-08-12T22:22:22+01:00""#, Users(&[1, 3, 4, 5, 6, 7, 8, 9, 10])),
    (EINRIDE_CHECKER, "create_time:*", "create_time:*", Users(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])),
    (EINRIDE_CHECKER, r#"create_time:"2022-08-12T22:22:22+01:00""#, r#"create_time:"2022-08-12T22:22:22+01:00""#, Refused(0)),
    // rcleveng/sqlalchemy_aip160.
    (SQLALCHEMY, r#"name = "Widget*""#, r#"last_name = "Widget*""#, Users(&[4, 5])),
    (SQLALCHEMY, r#"name = "*A""#, r#"last_name = "*A""#, Users(&[4])),
    (SQLALCHEMY, "category:*", "first_name:*", Users(&[1, 2, 3, 4, 5, 6, 8, 9, 10])),
    (SQLALCHEMY, r#"status = "active" priority > 2"#, r#"first_name = "Grace" public_metadata.seats > 2"#, Users(&[5])),
    (SQLALCHEMY, r#"status = "active" AND priority = 1 OR priority = 5"#, r#"first_name = "Karin" AND public_metadata.seats = 50 OR public_metadata.seats = 5"#, Users(&[3, 9])),
    (SQLALCHEMY, r#"status = 'active'"#, "first_name = 'Karin'", Users(&[3, 9])),
    (SQLALCHEMY, r#"-status = "active""#, r#"-first_name = "Ada""#, Users(&[3, 4, 5, 6, 7, 8, 9, 10])),
    (SQLALCHEMY, "status ==== active", "last_name ==== Boye", Refused(11)),
    (SQLALCHEMY, "(status = active", "(last_name = Boye", Refused(13)),
    (SQLALCHEMY, "active", "banned", Refused(0)),
    // comradesharf/diesel-aip-160.
    (DIESEL, "name=A AND nickname=B OR name=C", r#"first_name="Ada" AND last_name="Byron" OR first_name="Karin""#, Users(&[2])),
    (DIESEL, "name=A nickname=B OR name=C", r#"first_name="Ada" last_name="Byron" OR first_name="Karin""#, Users(&[2])),
    (DIESEL, "name='Central*'", "last_name='Central*'", Users(&[6])),
    (DIESEL, "name='*Central'", "last_name='*Central'", Users(&[9])),
    (DIESEL, "name='*Central*'", "last_name='*Central*'", Users(&[6, 9])),
    (DIESEL, "name!='Central*'", "last_name!='Central*'", Users(&[1, 2, 3, 4, 5, 7, 8, 9, 10])),
    (DIESEL, r#"name="a%_*b\\c": a middle * is no wildcard"#, r#"last_name = "a%_*b\\c""#, Users(&[7])),
    (DIESEL, "'%' and '_' are literals", r#"last_name = "a%*""#, Users(&[7, 8])),
    (DIESEL, "'%' and '_' are literals", r#"last_name = "a_*""#, Users(&[])),
    (DIESEL, "'%' and '_' are literals", r#"last_name = "*%_XYZ*""#, Users(&[8])),
    (DIESEL, "name == 'A'", "last_name == 'Boye'", Refused(11)),
    (DIESEL, "name=A && nickname=B", r#"last_name="Boye" && first_name="Karin""#, Refused(17)),
    (DIESEL, "nickname>null", "last_name>null", Refused(0)),
    (DIESEL, "nickname:null", "last_name:null", Refused(0)),
    (DIESEL, "unknown=A", r#"unknown="A""#, Refused(0)),
    (DIESEL, "missing:*", "missing:*", Refused(0)),
    (DIESEL, "name=(A OR B)", r#"last_name=("Boye" OR "Byron")"#, Refused(10)),
    // zshainsky/aip160: its precedence cases contradict AIP-160; the AIP's reading is expected.
    (ZSHAINSKY, "a OR b AND c (suite: a OR (b AND c))", r#"first_name = "Karin" OR first_name = "Ada" AND banned = true"#, Users(&[2, 9])),
    (ZSHAINSKY, "a AND b OR c (suite: (a AND b) OR c)", r#"banned = true AND first_name = "Ada" OR first_name = "Karin""#, Users(&[2, 9])),
    (ZSHAINSKY, "a OR b AND c OR d (suite: (a OR (b AND c)) OR d)", r#"first_name = "Ada" OR first_name = "Karin" AND banned = true OR locked = true"#, Users(&[2, 3, 9])),
    (ZSHAINSKY, "NOT a AND b", r#"NOT banned = true AND first_name = "Ada""#, Users(&[1])),
    (ZSHAINSKY, "NOT NOT active", "NOT NOT banned = true", Users(&[2, 9])),
    (ZSHAINSKY, "TRUE (suite: a boolean)", "banned = TRUE", Refused(9)),
    (ZSHAINSKY, "(age > 18", "(public_metadata.seats > 18", Refused(27)),
    (ZSHAINSKY, "age > ", "public_metadata.seats > ", Refused(24)),
    // Ours: email folds ASCII letters only, in memory and in SQL, whatever the collation.
    // Ours: `\*` is a literal star, at the ends too (AIP-160 defines no escape for it).
    (OURS, r"\* is a literal", r#"last_name = "*\*b\\c""#, Users(&[7])),
    (OURS, r"\* is a literal", r#"last_name = "a%_\*b\\c""#, Users(&[7])),
    (OURS, r"\* is a literal", r#"last_name != "a%_\*b\\c""#, Users(&[1, 2, 3, 4, 5, 6, 8, 9, 10])),
    (OURS, "ASCII-only folding", r#"email = "Éva@EXAMPLE.org""#, Users(&[8])),
    (OURS, "ASCII-only folding", r#"email = "ÉVA@EXAMPLE.COM""#, Users(&[])),
    (OURS, "ASCII-only folding", r#"email = "éva@example.org""#, Users(&[])),
    (OURS, "ASCII-only folding", r#"email = "*ÉVA@example.COM""#, Users(&[])),
    (OURS, "ASCII-only folding", r#"email = "*éva@example.COM""#, Users(&[8])),
];

/// The population: ten users whose fields tell the readings of each case apart.
fn population() -> Vec<String> {
    let at = |rfc3339: &str| {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    };
    #[rustfmt::skip]
    let users: [(Value, &str, bool, bool, i64, Value, &[&str]); 10] = [
        (json!("Ada"), "Lovelace", false, false, at("2022-08-12T21:22:22Z"),
            json!({"plan": "pro", "seats": 5, "tags": ["beta"]}), &["ada@example.com"]),
        (json!("Ada"), "Byron", true, false, at("2020-01-01T00:00:00Z"),
            json!({"plan": "free", "seats": 150, "tags": []}), &["ADA.BYRON@Example.org"]),
        (json!("Karin"), "Boye", false, true, T,
            json!({"plan": "pro-annual", "seats": 50, "tags": ["beta", "x"]}), &["karin@example.com"]),
        (json!("Grace"), "Widget A", false, false, T, json!({"seats": 1}), &["grace.a@example.net"]),
        (json!("Grace"), "Widget B", false, false, T, json!({"seats": 3}), &["grace.b@example.net"]),
        (json!("Alan"), "Central Station", false, false, T, json!({}), &[]),
        (json!(null), "a%_*b\\c", false, false, T, json!({"plan": null}), &[]),
        (json!("Éva"), "a%_XYZb\\c", false, false, T, json!({}), &["éva@example.com", "ÉVA@EXAMPLE.ORG"]),
        (json!("Karin"), "Old Central", true, false, T, json!({"seats": 5}), &["k2@example.com"]),
        (json!("☺☺"), "Ã¿", false, false, T, json!({}), &[]),
    ];
    users
        .into_iter()
        .enumerate()
        .map(|(i, (first, last, banned, locked, created, meta, emails))| {
            let id = format!("user_c{:02}", i + 1);
            let mut u = user(&id, T, "");
            u["first_name"] = first;
            u["last_name"] = json!(last);
            u["banned"] = json!(banned);
            u["locked"] = json!(locked);
            u["created_at"] = json!(created);
            u["public_metadata"] = meta;
            let addresses: Vec<Value> = emails
                .iter()
                .enumerate()
                .map(|(k, e)| json!({"id": format!("idn_{id}_{k}"), "object": "email_address", "email_address": e}))
                .collect();
            u["primary_email_address_id"] = addresses.first().map(|a| a["id"].clone()).unwrap_or(Value::Null);
            u["email_addresses"] = json!(addresses);
            envelope("user.created", T, u)
        })
        .collect()
}

fn ids(numbers: &[u8]) -> Vec<String> {
    numbers.iter().map(|n| format!("user_c{n:02}")).collect()
}

#[tokio::test]
async fn public_aip_160_suites_cases_hold_in_sql_and_in_memory_with_the_aip_winning_where_a_suite_contradicts_it() {
    let app = spawn_app().await;
    app.send_all_and_apply(&population()).await;
    let records: Vec<UserRecord> = sqlx::query_as("SELECT * FROM users ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(records.len(), 10);
    let states: Vec<(String, Value)> = records
        .iter()
        .map(|r| (r.id.clone(), serde_json::to_value(r).unwrap()))
        .collect();
    let mut c = client(&app).await;
    for (source, case, filter, expect) in TABLE {
        let what = format!("{source}: `{case}` as `{filter}`");
        match expect {
            Users(numbers) => {
                let want = ids(numbers);
                let parsed = Filter::parse(EntityType::User, filter)
                    .unwrap_or_else(|e| panic!("{what}: {e}"))
                    .unwrap();
                let in_memory: Vec<String> = states
                    .iter()
                    .filter(|(_, s)| parsed.matches(s))
                    .map(|(id, _)| id.clone())
                    .collect();
                assert_eq!(in_memory, want, "{what}: in memory");
                let listed: Vec<String> = list_all(&mut c, filter, false, 100)
                    .await
                    .into_iter()
                    .map(|u| u.id)
                    .collect();
                assert_eq!(listed, want, "{what}: in SQL");
            }
            Refused(position) => {
                let e = Filter::parse(EntityType::User, filter).unwrap_err();
                assert_eq!(e.position, *position, "{what}: {e}");
                let status = c
                    .list_users(pb::ListUsersRequest {
                        filter: filter.to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(status.code(), Code::InvalidArgument, "{what}");
                let info = status.get_details_error_info().unwrap();
                assert_eq!(
                    (info.reason.as_str(), info.metadata["position"].as_str()),
                    ("INVALID_FILTER", position.to_string().as_str()),
                    "{what}"
                );
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_bare_value_is_refused_with_the_quoted_comparison_as_the_hint() {
    let app = spawn_app().await;
    let mut c = client(&app).await;
    for (filter, position, hint) in [
        ("first_name = Ada Lovelace", "13", r#"`first_name = "Ada Lovelace"`"#),
        ("email = ada@example.com", "8", r#"`email = "ada@example.com"`"#),
        ("last_name = Wid*", "12", "a wildcard `*` goes inside the quotes"),
        (r#"first_name = "Ada" Lovelace"#, "19", "no free-text search"),
    ] {
        let e = c
            .list_users(pb::ListUsersRequest {
                filter: filter.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{filter}");
        let info = e.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.metadata["position"].as_str()),
            ("INVALID_FILTER", position),
            "{filter}"
        );
        assert!(e.message().contains(hint), "{filter}: {}", e.message());
    }
    app.stop().await;
}
