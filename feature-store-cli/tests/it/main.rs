//! The `feature-store` binary end to end on the scaffolded demo repo.

#[cfg(feature = "distributed")]
mod cluster;
mod crash;
#[cfg(target_os = "linux")]
mod memory_limits;
#[cfg(unix)]
mod permissions;
mod streams;
mod streams_kafka;
mod streams_nats;

use std::path::Path;
use std::process::{Command, Output};

fn cli(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feature-store"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .output()
        .expect("run feature-store")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fail(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got:\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

#[test]
fn demo_repo_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    let text = ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    assert!(text.contains("Created demo repo"));
    assert!(repo.join("data/driver_stats.parquet").is_file());

    // init refuses to overwrite.
    assert!(fail(&cli(tmp.path(), &["init", repo.to_str().unwrap()])).contains("already exists"));

    let plan = ok(&cli(&repo, &["plan"]));
    assert!(plan.contains("+ feature view driver_hourly_stats") && plan.contains("6 to add"), "{plan}");
    assert!(!repo.join("data/registry.json").exists(), "plan must not write");

    let applied = json(&cli(&repo, &["--json", "apply"]));
    assert_eq!(applied["version"], 1);
    assert_eq!(applied["written"], true);
    assert_eq!(applied["plan"]["changes"].as_array().unwrap().len(), 6);

    // Registry -> YAML -> repo round trip: the export, used as the repo, plans no change.
    let exported = ok(&cli(&repo, &["export"]));
    let original = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    std::fs::write(repo.join("features.yaml"), &exported).unwrap();
    assert!(ok(&cli(&repo, &["plan"])).contains("No changes."), "{exported}");
    std::fs::write(repo.join("features.yaml"), original).unwrap();

    let again = ok(&cli(&repo, &["apply"]));
    assert!(again.contains("No changes.") && again.contains("unchanged at version 1"), "{again}");

    let views = json(&cli(&repo, &["--json", "list", "views"]));
    assert_eq!(views[0]["spec"]["name"], "driver_hourly_stats");
    assert_eq!(views[0]["spec"]["ttl"], "1d");
    let table = ok(&cli(&repo, &["list", "entities"]));
    assert!(table.contains("driver_id:int64"), "{table}");
    for kind in ["sources", "services"] {
        assert_eq!(json(&cli(&repo, &["--json", "list", kind])).as_array().unwrap().len(), 1);
    }
    let described = json(&cli(&repo, &["--json", "describe", "driver_hourly_stats"]));
    assert_eq!(described[0]["kind"], "feature_view");
    assert_eq!(described[0]["spec"]["schema"][0]["name"], "conv_rate");
    let err = fail(&cli(&repo, &["describe", "driver_hourly_stat"]));
    assert!(err.contains("did you mean \"driver_hourly_stats\""), "{err}");

    // A breaking edit shows in plan; apply then removes the service.
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let edited = defs
        .replace("      - {name: avg_daily_trips, dtype: int64}\n", "")
        .replace(
            "      - {name: big_order, dtype: bool, expression: \"order_amount > 100 AND avg_daily_trips < 10\"}\n",
            "",
        )
        .replace(
            "    features: [driver_hourly_stats:conv_rate, driver_hourly_stats:avg_daily_trips]\n",
            "    features: [driver_hourly_stats:conv_rate]\n",
        )
        .replace("ttl: 1d", "ttl: 2d");
    std::fs::write(repo.join("features.yaml"), &edited).unwrap();
    let plan = ok(&cli(&repo, &["plan"]));
    assert!(plan.contains("BREAKING: feature \"avg_daily_trips\" removed"), "{plan}");
    assert!(plan.contains("ttl: \"1d\" -> \"2d\""), "{plan}");
    let out = json(&cli(&repo, &["--json", "apply"]));
    assert_eq!(out["version"], 2);

    std::fs::write(repo.join("features.yaml"), edited.split("feature_services:").next().unwrap()).unwrap();
    let out = ok(&cli(&repo, &["apply"]));
    assert!(out.contains("- feature service driver_activity") && out.contains("1 to remove"), "{out}");

    // Invalid definitions: non-zero exit, every problem on stderr, registry untouched.
    std::fs::write(repo.join("broken.yaml"), "feature_views:\n  - {name: v, source: nowhere, entities: [nobody]}\n")
        .unwrap();
    let err = fail(&cli(&repo, &["apply"]));
    assert!(err.contains("broken.yaml: feature view \"v\": unknown entity \"nobody\""), "{err}");
    assert!(err.contains("unknown source \"nowhere\""), "{err}");
    assert_eq!(json(&cli(&repo, &["--json", "list", "views"])).as_array().unwrap().len(), 1);
}

#[test]
fn not_a_repo_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fail(&cli(tmp.path(), &["apply"]));
    assert!(err.contains("is not a feature repo") && err.contains("feature-store init"), "{err}");
}

#[test]
fn materializing_into_a_per_process_memory_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    let config = repo.join("feature_store.yaml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("  type: sqlite\n  path: data/online.db\n", "  type: memory\n");
    std::fs::write(&config, text).unwrap();
    ok(&cli(&repo, &["apply"]));
    let err = fail(&cli(&repo, &["materialize-incremental"]));
    assert!(err.contains("type memory keeps values inside one process"), "{err}");
}

/// Eight processes apply eight projects to one registry file at once; every
/// project lands and the version counts every write.
#[test]
fn concurrent_processes_share_one_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = tmp.path().join("shared/registry.json");
    let template = tmp.path().join("template");
    ok(&cli(tmp.path(), &["init", template.to_str().unwrap()]));
    let writers = 8;
    let mut repos = Vec::new();
    for i in 0..writers {
        let repo = tmp.path().join(format!("repo{i}"));
        std::fs::create_dir_all(repo.join("data")).unwrap();
        std::fs::copy(template.join("data/driver_stats.parquet"), repo.join("data/driver_stats.parquet")).unwrap();
        std::fs::copy(template.join("features.yaml"), repo.join("features.yaml")).unwrap();
        std::fs::write(
            repo.join("feature_store.yaml"),
            format!("project: team_{i}\nregistry: {}\n", registry.display()),
        )
        .unwrap();
        repos.push(repo);
    }
    let children: Vec<_> = repos
        .iter()
        .map(|repo| {
            Command::new(env!("CARGO_BIN_EXE_feature-store"))
                .arg("--repo")
                .arg(repo)
                .args(["--json", "apply"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(json(&out)["written"], true);
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&registry).unwrap()).unwrap();
    assert_eq!(doc["version"], writers);
    for i in 0..writers {
        assert!(doc["projects"][format!("team_{i}")]["feature_views"]["driver_hourly_stats"].is_object());
    }
}

#[test]
fn historical_to_files_and_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let entities = repo.join("data/driver_orders.parquet");
    let entities = entities.to_str().unwrap();

    let out = tmp.path().join("train.parquet");
    let run = cli(
        &repo,
        &["historical", "--entities", entities, "--service", "driver_activity", "--output", out.to_str().unwrap()],
    );
    ok(&run);
    let summary = String::from_utf8_lossy(&run.stderr);
    assert!(summary.contains("historical: 12 rows written to"), "{summary}");
    let file = std::fs::File::open(&out).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["driver_id", "event_timestamp", "trip_completed", "conv_rate", "avg_daily_trips"]);

    let csv = tmp.path().join("train.csv");
    ok(&cli(
        &repo,
        &[
            "historical",
            "--entities",
            entities,
            "--features",
            "driver_hourly_stats:acc_rate",
            "--full-feature-names",
            "--output",
            csv.to_str().unwrap(),
        ],
    ));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("driver_id,event_timestamp,trip_completed,driver_hourly_stats__acc_rate\n"), "{text}");
    // A failed run leaves an existing file as it was and no partial file behind.
    let keep = tmp.path().join("keep.txt");
    std::fs::write(&keep, "keep me").unwrap();
    let err = fail(&cli(
        &repo,
        &["historical", "--entities", entities, "--service", "driver_activity", "--output", keep.to_str().unwrap()],
    ));
    assert!(err.contains("use a .parquet or .csv file name"), "{err}");
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "keep me");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(text.lines().count(), 13);
    // An output inside a data source would replace its data: refused, the source untouched.
    let source = repo.join("data/driver_stats.parquet");
    let before = std::fs::read(&source).unwrap();
    let err = fail(&cli(
        &repo,
        &["historical", "--entities", entities, "--service", "driver_activity", "--output", source.to_str().unwrap()],
    ));
    assert!(err.contains("inside data source \"driver_stats\""), "{err}");
    assert_eq!(std::fs::read(&source).unwrap(), before);

    // SQL entity query over the sources, printed as a table.
    let sql = "SELECT driver_id, max(event_timestamp) AS event_timestamp FROM driver_stats GROUP BY driver_id ORDER BY driver_id";
    let table =
        ok(&cli(&repo, &["historical", "--entities", sql, "--features", "driver_hourly_stats:avg_daily_trips"]));
    assert!(table.contains("| 1001      |") && table.contains("avg_daily_trips"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| 10")).count(), 5, "{table}");

    // A CSV entity file with ISO timestamps (UTC, naive, and an offset) is accepted.
    let csv_in = tmp.path().join("entities.csv");
    std::fs::write(&csv_in, "driver_id,event_timestamp\n1001,2030-01-01T00:00:00Z\n1002,2030-01-01T00:00:00\n1003,2030-01-01 02:00:00+02:00\n").unwrap();
    let table = ok(&cli(
        &repo,
        &["historical", "--entities", csv_in.to_str().unwrap(), "--features", "driver_hourly_stats:conv_rate"],
    ));
    assert_eq!(table.lines().filter(|l| l.starts_with("| 100")).count(), 3, "{table}");
    // All three instants are equal, long after the data: ttl 1d leaves every value null.
    for line in table.lines().filter(|l| l.starts_with("| 100")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells[2], "2030-01-01T00:00:00Z", "{table}");
        assert_eq!(cells[3], "", "{table}");
    }

    let err = fail(&cli(&repo, &["historical", "--entities", entities, "--features", "driver_hourly_stats:nope"]));
    assert!(err.contains("feature \"driver_hourly_stats:nope\" not found"), "{err}");
    let err = fail(&cli(
        &repo,
        &[
            "historical",
            "--entities",
            entities,
            "--features",
            "driver_hourly_stats:conv_rate",
            "--timestamp-column",
            "ts",
        ],
    ));
    assert!(err.contains("no timestamp column \"ts\""), "{err}");
}

#[test]
fn materialize_and_read_online() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    // Before materializing: known view, nothing stored.
    let before =
        json(&cli(&repo, &["online", "--features", "driver_hourly_stats:conv_rate", "--entity", "driver_id=1001"]));
    assert_eq!(before["results"][1]["statuses"][0], "NOT_FOUND");

    let report = json(&cli(&repo, &["--json", "materialize-incremental"]));
    let view = &report["views"][0];
    assert_eq!(view["view"], "driver_hourly_stats");
    assert_eq!(view["entities_written"], 5, "{report}");
    assert!(view["rows_read"].as_u64().unwrap() >= 5 * 24, "a day of hourly rows for five drivers: {report}");
    let again = json(&cli(&repo, &["--json", "materialize-incremental"]));
    assert_eq!(again["views"][0]["rows_read"], 0, "a second run starts at the watermark: {again}");

    let out = json(&cli(
        &repo,
        &[
            "online",
            "--service",
            "driver_activity",
            "--entity",
            "driver_id=1001",
            "--entity",
            "driver_id=9999",
            "--entity",
            "driver_id=1001",
        ],
    ));
    assert_eq!(out["metadata"]["feature_names"], serde_json::json!(["driver_id", "conv_rate", "avg_daily_trips"]));
    assert_eq!(out["results"][0]["values"], serde_json::json!([1001, 9999, 1001]));
    assert_eq!(out["results"][1]["statuses"], serde_json::json!(["PRESENT", "NOT_FOUND", "PRESENT"]));
    // Piped output above is JSON; --table prints the table for people.
    let table = ok(&cli(
        &repo,
        &[
            "online",
            "--table",
            "--service",
            "driver_activity",
            "--entity",
            "driver_id=1001",
            "--entity",
            "driver_id=9999",
        ],
    ));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("driver_id") && lines[0].contains("conv_rate") && lines[0].contains("avg_daily_trips")
    );
    assert!(lines[1].starts_with("1001") && lines[1].contains(" old)"), "{table}");
    assert!(lines[2].starts_with("9999") && lines[2].matches("not found").count() == 2, "{table}");
    assert!(!table.contains("1970"), "{table}");
    // An on-demand value over a missing input is shown with its status.
    let table = ok(&cli(
        &repo,
        &[
            "online",
            "--table",
            "--features",
            "order_features:big_order",
            "--entity",
            "driver_id=9999",
            "--request",
            "order_amount=50",
        ],
    ));
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("false (NOT_FOUND)")), "{table}");
    let err =
        fail(&cli(&repo, &["--json", "online", "--table", "--service", "driver_activity", "--entity", "driver_id=1"]));
    assert!(err.contains("--table and --json"), "{err}");
    let full = json(&cli(
        &repo,
        &[
            "online",
            "--features",
            "driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=1001",
            "--full-feature-names",
        ],
    ));
    assert_eq!(full["metadata"]["feature_names"], serde_json::json!(["driver_id", "driver_hourly_stats__conv_rate"]));
    assert!(out["results"][2]["values"][0].is_i64());
    assert_eq!(out["results"][2]["values"][0], out["results"][2]["values"][2]);

    // On-demand features with request data, one --request per --entity.
    let od = json(&cli(
        &repo,
        &[
            "online",
            "--features",
            "order_features:amount_x_conv,driver_hourly_stats:conv_rate",
            "--entity",
            "driver_id=1001",
            "--request",
            "order_amount=2",
            "--entity",
            "driver_id=9999",
            "--request",
            "order_amount=3",
        ],
    ));
    assert_eq!(od["metadata"]["feature_names"], serde_json::json!(["driver_id", "conv_rate", "amount_x_conv"]));
    let conv = od["results"][1]["values"][0].as_f64().unwrap();
    let product = od["results"][2]["values"][0].as_f64().unwrap();
    assert!((product - 2.0 * conv).abs() < 1e-6, "{od}");
    assert_eq!(od["results"][2]["statuses"], serde_json::json!(["PRESENT", "NULL_VALUE"]));
    let err = fail(&cli(&repo, &["online", "--features", "order_features", "--entity", "driver_id=1001"]));
    assert!(err.contains("no column \"order_amount\"") && err.contains("given: driver_id"), "{err}");
    let err = fail(&cli(
        &repo,
        &["online", "--features", "order_features", "--entity", "driver_id=1001", "--request", "order_amount=x"],
    ));
    assert!(err.contains("--request field \"order_amount\" is a number; \"x\" is not"), "{err}");
    // In double quotes a value is taken as written: "" is an empty string, not a number;
    // unquoted, an empty value is a null (and so is the feature computed from it).
    let quoted = ["online", "--features", "order_features:amount_x_conv", "--entity", "driver_id=1001", "--request"];
    let err = fail(&cli(&repo, &[&quoted[..], &["order_amount=\"\""][..]].concat()));
    assert!(err.contains("--request field \"order_amount\" is a number; \"\" is not"), "{err}");
    let null = json(&cli(&repo, &[&quoted[..], &["order_amount="][..]].concat()));
    assert_eq!(null["results"][1]["statuses"], serde_json::json!(["NULL_VALUE"]), "{null}");
    let err = fail(&cli(&repo, &[&quoted[..], &["order_amount=\"1"][..]].concat()));
    assert!(err.contains("is not closed"), "{err}");
    let err = fail(&cli(
        &repo,
        &[
            "online",
            "--features",
            "order_features",
            "--entity",
            "driver_id=1",
            "--entity",
            "driver_id=2",
            "--request",
            "order_amount=1",
        ],
    ));
    assert!(err.contains("2 --entity rows but 1 --request rows"), "{err}");

    // A window given explicitly, with a text summary on stderr.
    let done = cli(&repo, &["materialize", "2020-01-01", "now", "--views", "driver_hourly_stats"]);
    ok(&done);
    assert!(
        String::from_utf8_lossy(&done.stderr).contains("entities written"),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    for (args, needle) in [
        (vec!["materialize", "yesterday", "now"], "invalid time \"yesterday\""),
        (vec!["materialize", "2024-02-01", "2024-01-01"], "after it ends"),
        (vec!["materialize", "2024-01-01", "now", "--views", "nope"], "feature view \"nope\" not found"),
        (
            vec!["online", "--features", "driver_hourly_stats:conv_rate", "--entity", "driver_id=abc"],
            "\"driver_id\" is an integer",
        ),
        (
            vec!["online", "--features", "driver_hourly_stats:conv_rate", "--entity", "driver=1"],
            "no \"driver_id\" column",
        ),
        (vec!["online", "--features", "driver_hourly_stats:nope", "--entity", "driver_id=1"], "not found"),
    ] {
        let err = fail(&cli(&repo, &args));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn quality_gate_status_and_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    // A rule the demo data breaks: conv_rate is uniform in [0, 1).
    let defs = std::fs::read_to_string(repo.join("features.yaml")).unwrap();
    let strict = defs.replace(
        "    owner: ranking@example.com\n",
        "    owner: ranking@example.com\n    validation:\n      ranges: {conv_rate: [0.0, 0.5]}\n      max_null_fraction: {\"*\": 0.0}\n",
    );
    assert_ne!(strict, defs);
    std::fs::write(repo.join("features.yaml"), &strict).unwrap();
    ok(&cli(&repo, &["apply"]));

    let out = fail(&cli(&repo, &["validate"]));
    assert!(out.contains("validation failed for driver_hourly_stats"), "{out}");
    let out = cli(&repo, &["--json", "validate", "driver_hourly_stats"]);
    assert!(!out.status.success(), "a failed rule exits 1 with --json too");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&serde_json::Value> =
        reports[0]["results"].as_array().unwrap().iter().filter(|r| r["passed"] == false).collect();
    assert_eq!(failed.len(), 1, "{reports}");
    assert_eq!(failed[0]["rule"], "ranges");
    assert!(!failed[0]["samples"].as_array().unwrap().is_empty());

    // Materialization stops at the gate: exit 1, nothing written, the report on stdout, metrics written.
    let metrics = tmp.path().join("run.prom");
    let run = cli(&repo, &["materialize-incremental", "--metrics-file", metrics.to_str().unwrap()]);
    let err = fail(&run);
    assert!(err.contains("validation failed for driver_hourly_stats"), "{err}");
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("FAIL ranges conv_rate"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("feature_store_validation_passed{project=\"driver_ranking\",view=\"driver_hourly_stats\"} 0"),
        "{prom}"
    );
    assert!(prom.contains("# TYPE feature_store_materialize_rows_read_total counter"), "{prom}");
    let online =
        json(&cli(&repo, &["online", "--features", "driver_hourly_stats:conv_rate", "--entity", "driver_id=1001"]));
    assert_eq!(online["results"][1]["statuses"][0], "NOT_FOUND");
    let status = json(&cli(&repo, &["--json", "status"]));
    assert_eq!(status[0]["view"], "driver_hourly_stats");
    assert_eq!(status[0]["last_run"]["outcome"], "validation_failed");
    assert!(status[0]["watermark"].is_null());

    // Relaxed rules: the run passes, status shows freshness.
    std::fs::write(repo.join("features.yaml"), strict.replace("[0.0, 0.5]", "[0.0, 1.0]")).unwrap();
    ok(&cli(&repo, &["apply"]));
    ok(&cli(&repo, &["materialize-incremental", "--metrics-file", metrics.to_str().unwrap()]));
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("feature_store_validation_passed{project=\"driver_ranking\",view=\"driver_hourly_stats\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("feature_store_freshness_lag_seconds{"), "{prom}");
    let status = json(&cli(&repo, &["--json", "status"]));
    assert_eq!(status[0]["last_run"]["outcome"], "succeeded");
    assert!(status[0]["freshness_lag_seconds"].as_f64().unwrap() >= 0.0);
    let text = ok(&cli(&repo, &["status"]));
    assert!(text.contains("FRESHNESS LAG") && text.contains("succeeded"), "{text}");

    // A reference profile, then a drift rule checked against it.
    let text = ok(&cli(&repo, &["profile", "driver_hourly_stats"]));
    assert!(text.contains("FEATURE") && text.contains("conv_rate") && text.contains("12 bins"), "{text}");
    let profile = json(&cli(&repo, &["--json", "profile", "driver_hourly_stats", "--dry-run"]));
    assert_eq!(profile["view"], "driver_hourly_stats");
    assert!(profile["features"]["conv_rate"]["quantiles"]["p50"].is_number(), "{profile}");
    let drift = strict.replace("[0.0, 0.5]", "[0.0, 1.0]").replace(
        "      max_null_fraction: {\"*\": 0.0}\n",
        "      max_null_fraction: {\"*\": 0.0}\n      drift: {method: psi, threshold: 0.1}\n",
    );
    std::fs::write(repo.join("features.yaml"), drift).unwrap();
    ok(&cli(&repo, &["apply"]));
    let text = ok(&cli(&repo, &["validate"]));
    assert!(text.contains("drift") && text.contains("psi 0.0"), "{text}");
}

#[test]
fn saved_datasets_list_show_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let entities = repo.join("data/driver_orders.parquet");
    let run = cli(
        &repo,
        &["historical", "--entities", entities.to_str().unwrap(), "--service", "driver_activity", "--save", "train_v1"],
    );
    ok(&run);
    let summary = String::from_utf8_lossy(&run.stderr);
    assert!(summary.contains("saved as dataset \"train_v1\""), "{summary}");
    // The same report of rows without values as a plain run.
    let plain = cli(&repo, &["historical", "--entities", entities.to_str().unwrap(), "--service", "driver_activity"]);
    let report =
        |text: &str| text.lines().filter(|l| l.contains("rows have no value")).map(str::to_owned).collect::<Vec<_>>();
    let plain_report = report(&String::from_utf8_lossy(&plain.stderr));
    assert!(!plain_report.is_empty(), "test bug: the demo's entities all have values");
    assert_eq!(report(&summary), plain_report, "{summary}");

    let csv = tmp.path().join("x.csv");
    let err = fail(&cli(
        &repo,
        &[
            "historical",
            "--entities",
            entities.to_str().unwrap(),
            "--service",
            "driver_activity",
            "--save",
            "x",
            "--output",
            csv.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("a saved dataset is written as Parquet"), "{err}");

    let list = ok(&cli(&repo, &["dataset", "list"]));
    assert!(list.contains("train_v1") && list.contains("12"), "{list}");
    let show = ok(&cli(&repo, &["dataset", "show", "train_v1"]));
    assert!(show.contains("feature service:   driver_activity") && show.contains("source files (1)"), "{show}");
    let manifest = json(&cli(&repo, &["--json", "dataset", "show", "train_v1"]));
    assert_eq!(manifest["output"]["rows"], 12);
    let location = manifest["output"]["file"]["location"].as_str().unwrap().to_owned();
    assert!(location.contains("data/datasets/driver_ranking/train_v1/"), "{location}");
    let out = std::path::PathBuf::from(location.strip_prefix("file://").unwrap());
    assert!(out.exists());
    let text = ok(&cli(&repo, &["dataset", "verify", "train_v1"]));
    assert!(text.contains("bit-identical"), "{text}");
    // A plain retrieval may not write over a saved dataset's output.
    let err = fail(&cli(
        &repo,
        &[
            "historical",
            "--entities",
            entities.to_str().unwrap(),
            "--service",
            "driver_activity",
            "--output",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("is the output of saved dataset \"train_v1\""), "{err}");
    let text = ok(&cli(&repo, &["dataset", "verify", "train_v1"]));
    assert!(text.contains("bit-identical"), "{text}");

    // On-demand features are saved with their definitions, shown and recomputed.
    let orders = tmp.path().join("orders.csv");
    std::fs::write(&orders, "driver_id,event_timestamp,order_amount\n1001,2030-01-01T00:00:00Z,150\n").unwrap();
    ok(&cli(
        &repo,
        &["historical", "--entities", orders.to_str().unwrap(), "--features", "order_features", "--save", "odfv"],
    ));
    let show = ok(&cli(&repo, &["dataset", "show", "odfv"]));
    assert!(show.contains("conv_rate (on-demand input)"), "{show}");
    assert!(show.contains("amount_x_conv float64 = order_amount * conv_rate"), "{show}");
    let text = ok(&cli(&repo, &["dataset", "verify", "odfv"]));
    assert!(text.contains("bit-identical"), "{text}");

    // Tampered output: exit 1 naming it.
    let mut bytes = std::fs::read(&out).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&out, bytes).unwrap();
    let run = cli(&repo, &["dataset", "verify", "train_v1"]);
    let err = fail(&run);
    assert!(err.contains("differs from its record: 1 difference(s)"), "{err}");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("output") && text.contains("modified"), "{text}");
    let err = fail(&cli(&repo, &["dataset", "show", "train_v2"]));
    assert!(err.contains("dataset \"train_v2\" not found"), "{err}");
    let text = ok(&cli(&repo, &["dataset", "delete", "train_v1"]));
    assert_eq!(text.lines().filter(|l| l.starts_with("deleted ")).count(), 3, "{text}");
    assert!(!out.exists());
    assert!(!ok(&cli(&repo, &["dataset", "list"])).contains("train_v1"));
}

/// The LMDB store is shared by processes: a reader that keeps the file open
/// sees what a separate `materialize` process writes, and other processes read
/// it while the reader holds it.
#[test]
fn lmdb_store_is_shared_between_processes() {
    use feature_store::arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use feature_store::online::FeatureStatus;
    use feature_store::{Features, OnlineOptions};

    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    let config = std::fs::read_to_string(repo.join("feature_store.yaml")).unwrap();
    let config = config.replace("type: sqlite\n  path: data/online.db", "type: lmdb\n  path: data/online.lmdb");
    assert!(config.contains("type: lmdb"), "{config}");
    std::fs::write(repo.join("feature_store.yaml"), config).unwrap();
    ok(&cli(&repo, &["apply"]));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = feature_store::open(&repo).unwrap();
    let features = Features::refs(["driver_hourly_stats:avg_daily_trips"]);
    let ids: ArrayRef = std::sync::Arc::new(Int64Array::from(vec![1001, 9999]));
    let rows = RecordBatch::try_from_iter([("driver_id", ids)]).unwrap();
    let read = || rt.block_on(store.get_online_features(&features, &rows, &OnlineOptions::default())).unwrap();
    assert_eq!(read().status(0, "avg_daily_trips").unwrap(), FeatureStatus::NotFound);
    assert!(!repo.join("data/online.lmdb").exists(), "a read creates no file");

    ok(&cli(&repo, &["materialize-incremental"]));
    let after = read();
    assert_eq!(after.status(0, "avg_daily_trips").unwrap(), FeatureStatus::Present, "written by another process");
    assert_eq!(after.status(1, "avg_daily_trips").unwrap(), FeatureStatus::NotFound);
    let mine = after.value(0, "avg_daily_trips").unwrap();

    // While this process holds the file open, others read and write it.
    let out = json(&cli(
        &repo,
        &["online", "--features", "driver_hourly_stats:avg_daily_trips", "--entity", "driver_id=1001"],
    ));
    assert_eq!(out["results"][1]["statuses"][0], "PRESENT");
    assert_eq!(serde_json::to_value(&mine).unwrap(), out["results"][1]["values"][0]);
    ok(&cli(&repo, &["materialize", "2020-01-01", "now"]));
    assert_eq!(read().value(0, "avg_daily_trips").unwrap(), mine, "rewriting the same rows changes nothing");
}

/// The library's logs reach stderr only when asked for (-v, -vv), and never
/// stdout, which keeps carrying the JSON.
#[test]
fn verbose_logs_go_to_stderr_only() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    let quiet = cli(&repo, &["apply"]);
    ok(&quiet);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("registry: applied"), "silent without -v");
    let run = cli(&repo, &["--json", "-v", "materialize-incremental"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&run)).expect("stdout is still JSON");
    assert_eq!(report["views"][0]["view"], "driver_hourly_stats");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("materialize: view written") && stderr.contains("view=driver_hourly_stats"), "{stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains("=>"), "no progress bar off a terminal: {stderr:?}");
    let entities = repo.join("data/driver_orders.parquet");
    let retrieval = cli(
        &repo,
        &["-vv", "historical", "--entities", entities.to_str().unwrap(), "--features", "driver_hourly_stats:conv_rate"],
    );
    ok(&retrieval);
    let stderr = String::from_utf8_lossy(&retrieval.stderr);
    assert!(stderr.contains("historical: view joined") && stderr.contains("feature_rows="), "{stderr}");
    assert!(stderr.contains("historical: retrieval finished"), "{stderr}");
}

/// Library warnings reach stderr without -v (a pipeline author must see a
/// kept watermark or an ingest retrying through an outage), and stdout
/// stays the command's output.
#[test]
fn warnings_are_shown_without_verbose() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    ok(&cli(&repo, &["materialize", "2000-01-01T00:00:00Z", "2000-01-02T00:00:00Z"]));
    // A window starting after the watermark leaves a gap: the watermark is kept, with a warning.
    let gap = cli(&repo, &["--json", "materialize", "2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z"]);
    let report: serde_json::Value = serde_json::from_str(&ok(&gap)).expect("stdout is still JSON");
    assert!(report["views"].is_array(), "{report}");
    let stderr = String::from_utf8_lossy(&gap.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("kept it"), "no warning without -v: {stderr}");
    assert!(!stderr.contains("INFO"), "only warnings without -v: {stderr}");
}

/// `push` reads CSV and JSON lines with the registry's types, never
/// replaces a newer online value, and names the column and file it refuses.
#[test]
fn push_from_files() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let trips = |repo: &Path| -> serde_json::Value {
        let out = ok(&cli(
            repo,
            &["online", "--features", "driver_hourly_stats:avg_daily_trips", "--entity", "driver_id=1001"],
        ));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["results"][1]["values"][0].clone()
    };

    let csv = tmp.path().join("fresh.csv");
    std::fs::write(
        &csv,
        "driver_id,event_timestamp,conv_rate,acc_rate,avg_daily_trips\n1001,2030-01-01T00:00:00Z,0.5,0.25,7\n",
    )
    .unwrap();
    let out = ok(&cli(&repo, &["push", "driver_hourly_stats", "--file", csv.to_str().unwrap()]));
    assert!(out.contains("Pushed 1 row from") && out.contains("1 stored online"), "{out}");
    assert_eq!(trips(&repo), 7);

    // An older row, as JSON lines with a naive time (UTC): skipped, the value stays.
    let jsonl = tmp.path().join("late.jsonl");
    std::fs::write(
        &jsonl,
        "{\"driver_id\": 1001, \"event_timestamp\": \"2029-12-31T23:00:00\", \"conv_rate\": 0.1, \"acc_rate\": 0.1, \"avg_daily_trips\": 3}\n",
    )
    .unwrap();
    let out = ok(&cli(&repo, &["--json", "push", "driver_hourly_stats", "--file", jsonl.to_str().unwrap()]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["written"].as_u64(), report["skipped_older"].as_u64()), (Some(0), Some(1)), "{report}");
    assert_eq!(trips(&repo), 7, "never regress");

    // JSON values the declared type would have to cast are refused, as on every other push path;
    // a number without a fraction is fine for a float (JSON has one number type).
    let row = |trips: &str, conv: &str, key: &str| {
        format!(
            "{{\"driver_id\": {key}, \"event_timestamp\": \"2031-06-01T00:00:00Z\", \"conv_rate\": {conv}, \"acc_rate\": 1, \"avg_daily_trips\": {trips}}}\n"
        )
    };
    for (line, needle) in [
        (
            row("2.7", "0.5", "1001"),
            "column \"avg_daily_trips\" holds numbers with a fraction (Float64 (float64)), but it is declared int64",
        ),
        (row("2", "\"0.2\"", "1001"), "column \"conv_rate\" holds text (Utf8 (string)), but it is declared float32"),
        (row("2", "0.5", "\"1001\""), "column \"driver_id\" holds text (Utf8 (string)), but it is declared int64"),
    ] {
        std::fs::write(&jsonl, format!("{}{line}", row("1", "0.5", "1002"))).unwrap();
        let err = fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", jsonl.to_str().unwrap()]));
        assert!(err.contains("late.jsonl") && err.contains(needle), "{err}");
        assert_eq!(trips(&repo), 7, "a refused push writes nothing");
    }
    // A line cut short is named by its line in the file.
    std::fs::write(&jsonl, format!("{}{{\"driver_id\": 1002, \"event_", row("1", "1", "1002"))).unwrap();
    let err = fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", jsonl.to_str().unwrap()]));
    assert!(err.contains("late.jsonl: line 2 is not a JSON object: EOF while parsing"), "{err}");
    std::fs::write(&jsonl, row("1", "1", "1002")).unwrap();
    let out = ok(&cli(&repo, &["push", "driver_hourly_stats", "--file", jsonl.to_str().unwrap()]));
    assert!(out.contains("1 stored online"), "integers for float features: {out}");

    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "driver_id,event_timestamp,conv_rate,acc_rate,avg_daily_trips\n1001,2031-01-01T00:00:00Z,0.5,0.25,many\n",
    )
    .unwrap();
    let err = fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", bad.to_str().unwrap()]));
    assert!(err.contains("bad.csv") && err.contains("column \"avg_daily_trips\""), "{err}");

    let extra = tmp.path().join("extra.csv");
    std::fs::write(
        &extra,
        "driver_id,event_timestamp,conv_rate,acc_rate,avg_daily_trips,mood\n1001,2031-01-01T00:00:00Z,0.5,0.25,9,happy\n",
    )
    .unwrap();
    let err = fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", extra.to_str().unwrap()]));
    assert!(err.contains("\"mood\"") && err.contains("not a join key, timestamp or feature"), "{err}");
    assert_eq!(trips(&repo), 7, "a refused push writes nothing");

    // The demo's source is one file: an offline push cannot add to it, and says so.
    let err = fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", csv.to_str().unwrap(), "--to", "offline"]));
    assert!(err.contains("cannot append pushed rows") && err.contains("point the source at a folder"), "{err}");
    let err =
        fail(&cli(&repo, &["push", "driver_hourly_stats", "--file", tmp.path().join("rows.txt").to_str().unwrap()]));
    assert!(err.contains(".parquet, .csv") && err.contains("rows.txt"), "{err}");
}

/// A bad CSV value names its column and file line; a missing entity file
/// is named once; a bare feature name says whose feature it is.
#[test]
fn entity_file_errors_are_precise() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let csv = tmp.path().join("entities.csv");
    std::fs::write(&csv, "driver_id,event_timestamp\n1001,2024-05-01T00:00:00Z\n1002,yesterday\n").unwrap();
    let historical =
        |entities: &str, features: &str| cli(&repo, &["historical", "--entities", entities, "--features", features]);
    let err = fail(&historical(csv.to_str().unwrap(), "driver_hourly_stats:conv_rate"));
    assert!(err.contains("column \"event_timestamp\" at line 3 (data row 2)") && err.contains("'yesterday'"), "{err}");
    assert!(!err.contains("Parser error"), "{err}");
    // A key that does not parse as its declared type: the file, the column and the value.
    std::fs::write(&csv, "driver_id,event_timestamp\n1001,2024-05-01T00:00:00Z\nx,2024-05-01T00:00:00Z\n").unwrap();
    let err = fail(&historical(csv.to_str().unwrap(), "driver_hourly_stats:conv_rate"));
    assert!(err.contains("entities.csv") && err.contains("column \"driver_id\"") && err.contains("'x'"), "{err}");
    assert!(!err.contains("Parser error"), "{err}");

    let missing = tmp.path().join("nothere.parquet");
    let err = fail(&historical(missing.to_str().unwrap(), "driver_hourly_stats:conv_rate"));
    assert_eq!(err.matches("nothere.parquet").count(), 1, "{err}");

    let err = fail(&historical(csv.to_str().unwrap(), "conv_rate"));
    assert!(err.contains("write \"driver_hourly_stats:conv_rate\""), "{err}");
    let err = fail(&historical(csv.to_str().unwrap(), "driver_hourly_stats:conv_rat"));
    assert!(err.contains("did you mean \"driver_hourly_stats:conv_rate\"?") && !err.contains("?;"), "{err}");
    // Neither --features nor --service: the usage names both (a usage error, exit code 2).
    let usage = |args: &[&str]| {
        let out = cli(&repo, args);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for cmd in [&["historical", "--entities", csv.to_str().unwrap()][..], &["online", "--entity", "driver_id=1001"]] {
        let err = usage(cmd);
        assert!(err.contains("--features") && err.contains("--service"), "{err}");
    }
    let both =
        ["online", "--entity", "driver_id=1001", "--features", "driver_hourly_stats:conv_rate", "--service", "s"];
    assert!(usage(&both).contains("cannot be used with"));
}

/// Without --repo the CLI uses the nearest folder holding feature_store.yaml,
/// from the current one upwards, and stops at a git repository's root.
#[test]
fn the_repo_is_found_in_a_parent_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    let from = |dir: &Path, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_feature-store"))
            .current_dir(dir)
            .env_remove("FEATURE_STORE_REPO")
            .args(args)
            .output()
            .expect("run feature-store")
    };
    let views = json(&from(&repo.join("data"), &["--json", "list", "views"]));
    assert_eq!(views[0]["spec"]["name"], "driver_hourly_stats", "{views}");

    let project = tmp.path().join("project");
    std::fs::create_dir_all(project.join(".git")).unwrap();
    std::fs::create_dir_all(project.join("src")).unwrap();
    let err = fail(&from(&project.join("src"), &["list", "views"]));
    assert!(err.contains("no feature_store.yaml in") && err.contains("git repository's root"), "{err}");
    assert!(err.contains("feature-store init") && err.contains("--repo"), "{err}");
}

/// SIGTERM or SIGINT while `historical --output` writes removes the hidden
/// partial file; one left by a killed run (SIGKILL) is swept by the next run.
#[cfg(unix)]
#[test]
fn interrupted_output_leaves_no_partial_file() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("demo");
    ok(&cli(tmp.path(), &["init", repo.to_str().unwrap()]));
    ok(&cli(&repo, &["apply"]));
    // Enough entity rows that writing takes a while, even in a release build.
    let entities = repo.join("entities.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&entities).unwrap());
    writeln!(f, "driver_id,event_timestamp").unwrap();
    for i in 0..3_000_000u64 {
        writeln!(f, "{},2026-01-0{}T0{}:00:00Z", 1001 + i % 5, 1 + i % 9, i % 10).unwrap();
    }
    drop(f);
    let partials = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".partial"))
            .collect()
    };
    for (signal, code) in [("-TERM", 143), ("-INT", 130)] {
        let child = Command::new(env!("CARGO_BIN_EXE_feature-store"))
            .arg("--repo")
            .arg(&repo)
            .args(["historical", "--entities", "entities.csv", "--features", "driver_hourly_stats:conv_rate"])
            .args(["--output", "out.parquet"])
            .current_dir(&repo)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while partials(&repo).is_empty() {
            assert!(started.elapsed().as_secs() < 120, "no partial file appeared");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let kill = Command::new("kill").arg(signal).arg(child.id().to_string()).status().unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            // The run finished between the check and the signal: nothing to test this round.
            continue;
        }
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains("interrupted; the partial output file was removed"), "{stderr}");
        assert_eq!(partials(&repo), Vec::<String>::new(), "{signal} left a partial file");
        assert!(!repo.join("out.parquet").exists(), "no output from an interrupted run");
    }
    // Past a file size limit (as on a full disk), the error names the output
    // and nothing is left behind.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 64 && exec '{}' --repo '{}' historical --entities entities.csv \
             --features driver_hourly_stats:conv_rate --output out.parquet",
            env!("CARGO_BIN_EXE_feature-store"),
            repo.display()
        ))
        .current_dir(&repo)
        .output()
        .unwrap();
    let stderr = fail(&limited);
    let out = repo.join("out.parquet");
    assert!(stderr.contains(&format!("cannot write the output {}", out.display())), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
    assert_eq!(partials(&repo), Vec::<String>::new(), "a failed write left a partial file");
    assert!(!out.exists());
    std::fs::write(repo.join("few.csv"), "driver_id,event_timestamp\n1001,2026-01-01T00:00:00Z\n").unwrap();
    let (few, small) = (repo.join("few.csv"), repo.join("small.parquet"));
    let args = ["--entities", few.to_str().unwrap(), "--features", "driver_hourly_stats:conv_rate"];
    // The entity table is never overwritten by the output.
    let err = fail(&cli(&repo, &[&["historical"][..], &args, &["--output", few.to_str().unwrap()]].concat()));
    assert!(err.contains("is the entity table being read"), "{err}");
    assert!(std::fs::read_to_string(&few).unwrap().contains("1001,"), "the entity file is intact");
    // A partial file of a process that no longer exists is swept by the next run.
    let stale = repo.join(".small.parquet.999999999.partial");
    std::fs::write(&stale, b"half a file").unwrap();
    ok(&cli(&repo, &[&["historical"][..], &args, &["--output", small.to_str().unwrap()]].concat()));
    assert!(!stale.exists(), "the stale partial file was swept");
}
