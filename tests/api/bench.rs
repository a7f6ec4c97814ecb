//! `clerk-mirror bench`: every scenario runs end to end at small sizes and reports ratios and
//! targets (the figures themselves are not asserted: a test is no benchmark).

use crate::process::binary;

#[tokio::test]
async fn the_bench_command_runs_every_scenario_and_reports_rows_ratios_and_targets() {
    let out = tokio::process::Command::new(binary())
        .args(["bench", "all", "--quick", "--json"])
        .env_remove("CLERK_MIRROR_BENCH_DATABASE_URL")
        .env_remove("CLERK_MIRROR_BENCH_SERVER_LOG")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run clerk-mirror bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let reports = reports.as_array().expect("one report per scenario");
    let names: Vec<&str> = reports.iter().map(|r| r["scenario"].as_str().unwrap()).collect();
    assert_eq!(names, ["ingest", "lookup", "watch", "backfill", "outbound"]);
    for report in reports {
        let scenario = &report["scenario"];
        let rows = report["rows"].as_array().unwrap();
        assert!(rows.len() >= 2, "{scenario}: {rows:?}");
        assert!(rows.iter().any(|r| r["baseline"] == true), "{scenario} has no baseline");
        for row in rows {
            assert!(row["ops"].as_u64().unwrap() > 0, "{scenario}: {row}");
            assert_eq!(row["errors"], 0, "{scenario}: {row}");
            if row["baseline"] == false {
                let vs = row["vs"].as_array().unwrap();
                assert!(!vs.is_empty(), "{scenario}: a row without a ratio: {row}");
                assert!(vs.iter().all(|v| v[1].as_f64().unwrap() > 0.0), "{scenario}: {row}");
            }
        }
        assert!(
            !report["targets"].as_array().unwrap().is_empty(),
            "{scenario}: no targets"
        );
    }
    // Every acked webhook was applied, and the hub read each change once.
    let ingest = &reports[0];
    let applied = ingest["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f[0] == "applied inbox rows / events acked");
    let applied = applied.expect("the applied count")[1].as_str().unwrap();
    let (a, b) = applied.split_once(" / ").unwrap();
    assert_eq!(a, b, "applied / acked");
    // #27's rows: pgbench's INSERT per commit, acks with the applier paused, the rate sustained.
    let ingest_rows: Vec<&str> = ingest["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for wanted in ["pgbench INSERT per commit", "applier paused", "applier alone", "sustained"] {
        assert!(ingest_rows.iter().any(|n| n.contains(wanted)), "{wanted}: {ingest_rows:?}");
    }
    // The point read's baseline is PostgreSQL's own C client, measured in the same run.
    let lookup_rows = reports[1]["rows"].as_array().unwrap();
    assert!(
        lookup_rows
            .iter()
            .any(|r| r["name"].as_str().unwrap().starts_with("pgbench -M prepared GetUser") && r["baseline"] == true),
        "{lookup_rows:?}"
    );
    let watch = &reports[2];
    let reads = watch["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["what"].as_str().unwrap().contains("read from PostgreSQL"));
    assert_eq!(reads.expect("the change-log reads target")["measured"], 1.0);
    // Watchers resuming within the hub's ring read nothing from PostgreSQL.
    let resumed = watch["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["what"].as_str().unwrap().contains("resuming within the ring"));
    assert_eq!(resumed.expect("the resume target")["measured"], 0.0);
}
