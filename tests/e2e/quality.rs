//! Data-quality gates end to end: each rule passes on clean data and fails on
//! data with its defect; a failing window writes nothing online and leaves
//! the watermark where it was, while other views proceed.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema};
use chrono::{DateTime, TimeZone, Utc};
use feature_store::online::FeatureValue;
use feature_store::registry::{ApplyMode, RunOutcome};
use feature_store::{FeatureStore, Features, MaterializeOptions, OnlineOptions};
use feature_store_tests::write_parquet;

use crate::ts_type;

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
/// Midnight starting day 1; day 2 follows.
const D1: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const DRIVERS: i64 = 50;

fn at(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).unwrap()
}

/// What to break in a day of data.
#[derive(Default, Clone, Copy)]
struct Defect {
    null_rate_every: Option<i64>,
    rate_out_of_range: bool,
    new_vehicle: bool,
    keep_drivers: Option<i64>,
    stop_hours_early: i64,
    rate_as_text: bool,
    extra_column: bool,
    shift_rate: bool,
    mostly_cars: bool,
}

/// One row per driver per hour of the day starting at `day`.
fn day_batch(day: i64, d: Defect) -> RecordBatch {
    let (mut ids, mut ts, mut rate, mut trips, mut vehicle) = (vec![], vec![], vec![], vec![], vec![]);
    let drivers = d.keep_drivers.unwrap_or(DRIVERS);
    for h in 0..(24 - d.stop_hours_early) {
        for id in 0..drivers {
            let i = h * DRIVERS + id;
            ids.push(id);
            ts.push(day + h * HOUR);
            let r = ((id * 7 + h) % 100) as f64 / 100.0;
            // Still within [0, 1]: only the distribution moves.
            let r = if d.shift_rate { 0.6 + r * 0.4 } else { r };
            rate.push(match d.null_rate_every {
                Some(n) if i % n == 0 => None,
                _ if d.rate_out_of_range && i % 97 == 3 => Some(1.5),
                _ => Some(r),
            });
            trips.push(id + h);
            vehicle.push(if d.new_vehicle && i % 50 == 7 {
                "rocket"
            } else if d.mostly_cars && i % 10 != 0 {
                "car"
            } else {
                ["car", "bike", "van"][(i % 3) as usize]
            });
        }
    }
    let rate_col: ArrayRef = if d.rate_as_text {
        Arc::new(rate.iter().map(|r| r.map(|v| v.to_string())).collect::<StringArray>())
    } else {
        Arc::new(Float64Array::from(rate))
    };
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("rate", rate_col.data_type().clone(), true),
        Field::new("trips", DataType::Int64, true),
        Field::new("vehicle", DataType::Utf8, true),
    ];
    let n = ids.len();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        rate_col,
        Arc::new(Int64Array::from(trips)),
        Arc::new(StringArray::from(vehicle)),
    ];
    if d.extra_column {
        fields.push(Field::new("surprise", DataType::Int64, true));
        cols.push(Arc::new(Int64Array::from(vec![1; n])));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn defs(new_columns: &str) -> String {
    format!(
        "
entities: [{{name: driver, join_keys: [driver_id]}}]
sources:
  - {{name: rides, path: data/rides, timestamp_field: event_timestamp}}
  - {{name: rides_copy, path: data/rides_copy, timestamp_field: event_timestamp}}
feature_views:
  - name: rides_v
    entities: [driver]
    source: rides
    schema: [{{name: rate, dtype: float64}}, {{name: trips, dtype: int64}}, {{name: vehicle, dtype: string}}]
    validation:
      max_null_fraction: {{rate: 0.02, \"*\": 0.1}}
      ranges: {{rate: [0.0, 1.0], trips: [0, null]}}
      allowed_values: {{vehicle: [car, bike, van]}}
      max_row_count_change: 0.2
      max_staleness: 4h
      new_columns: {new_columns}
      drift: {{method: psi, threshold: 0.2}}
  - name: other_v
    entities: [driver]
    source: rides_copy
    schema: [{{name: trips, dtype: int64}}]
"
    )
}

/// A repo with a clean day 1 applied and materialized.
async fn repo(new_columns: &str) -> (tempfile::TempDir, FeatureStore) {
    repo_with(new_columns, false).await
}

/// [`repo`], with day 1 stored as the reference profile when `profile`.
async fn repo_with(new_columns: &str, profile: bool) -> (tempfile::TempDir, FeatureStore) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: quality\nregistry: data/registry.json\n").unwrap();
    std::fs::write(dir.path().join("features.yaml"), defs(new_columns)).unwrap();
    write_parquet(&dir.path().join("data/rides/day1.parquet"), &day_batch(D1, Defect::default()));
    write_parquet(&dir.path().join("data/rides_copy/day1.parquet"), &day_batch(D1, Defect::default()));
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let report = store.materialize(at(D1), at(D1 + DAY - 1), &MaterializeOptions::default()).await.unwrap();
    assert!(report.failed_views().is_empty(), "clean day 1 must pass: {report:?}");
    if profile {
        store.profile("rides_v", Some(at(D1)), at(D1 + DAY - 1), true).await.unwrap();
    }
    (dir, store)
}

async fn watermark(store: &FeatureStore, view: &str) -> Option<DateTime<Utc>> {
    let doc = store.registry().refresh().await.unwrap();
    doc.project(store.project()).registry().view_state.get(view).and_then(|s| s.watermark)
}

async fn trips_online(store: &FeatureStore, driver: i64) -> (FeatureValue, Option<DateTime<Utc>>) {
    let rows =
        RecordBatch::try_from_iter([("driver_id", Arc::new(Int64Array::from(vec![driver])) as ArrayRef)]).unwrap();
    let r =
        store.get_online_features(&Features::refs(["rides_v:trips"]), &rows, &OnlineOptions::default()).await.unwrap();
    (r.value(0, "trips").unwrap(), r.event_timestamp(0, "trips").unwrap())
}

/// Day 2 with `defect`; returns the failed rules (`rule feature`) of rides_v, and checks
/// that a failure wrote nothing and kept the watermark while other_v proceeded.
async fn day2(defect: Defect, new_columns: &str) -> Vec<String> {
    day2_with(defect, new_columns, false).await
}

async fn day2_with(defect: Defect, new_columns: &str, profile: bool) -> Vec<String> {
    let (dir, store) = repo_with(new_columns, profile).await;
    write_parquet(&dir.path().join("data/rides/day2.parquet"), &day_batch(D1 + DAY, defect));
    write_parquet(&dir.path().join("data/rides_copy/day2.parquet"), &day_batch(D1 + DAY, Defect::default()));
    let before = trips_online(&store, 3).await;
    let report = store.materialize(at(D1 + DAY), at(D1 + 2 * DAY - 1), &MaterializeOptions::default()).await.unwrap();
    let rides = report.views.iter().find(|v| v.view == "rides_v").unwrap();
    let other = report.views.iter().find(|v| v.view == "other_v").unwrap();
    assert_eq!(other.outcome, RunOutcome::Succeeded, "other views proceed");
    assert_eq!(watermark(&store, "other_v").await, Some(at(D1 + 2 * DAY - 1)));
    let failed: Vec<String> = rides
        .validation
        .as_ref()
        .map(|v| v.failures().map(|r| format!("{} {}", r.rule, r.feature.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let doc = store.registry().refresh().await.unwrap();
    let last = doc.project("quality").registry().view_state["rides_v"].runs.last().cloned().unwrap();
    if failed.is_empty() {
        assert_eq!(rides.outcome, RunOutcome::Succeeded);
        assert_eq!(watermark(&store, "rides_v").await, Some(at(D1 + 2 * DAY - 1)));
        assert_eq!(last.outcome, RunOutcome::Succeeded);
    } else {
        assert_eq!(rides.outcome, RunOutcome::ValidationFailed);
        assert_eq!(rides.entities_written, 0);
        assert_eq!(watermark(&store, "rides_v").await, Some(at(D1 + DAY - 1)), "watermark untouched");
        assert_eq!(trips_online(&store, 3).await, before, "online store untouched");
        assert_eq!(last.outcome, RunOutcome::ValidationFailed);
        assert_eq!(last.validation_passed, Some(false));
        assert!(!last.failed_rules.is_empty());
    }
    failed
}

#[tokio::test]
async fn clean_day_passes_every_rule() {
    assert_eq!(day2(Defect::default(), "allow").await, Vec::<String>::new());
}

#[tokio::test]
async fn null_burst_fails_max_null_fraction() {
    let failed = day2(Defect { null_rate_every: Some(10), ..Defect::default() }, "allow").await;
    assert_eq!(failed, vec!["max_null_fraction rate"]);
}

#[tokio::test]
async fn out_of_range_values_fail_ranges_with_samples() {
    let (dir, store) = repo("allow").await;
    write_parquet(
        &dir.path().join("data/rides/day2.parquet"),
        &day_batch(D1 + DAY, Defect { rate_out_of_range: true, ..Defect::default() }),
    );
    let reports =
        store.validate(Some(&["rides_v".to_owned()]), Some(at(D1 + DAY)), at(D1 + 2 * DAY - 1)).await.unwrap();
    let failures: Vec<_> = reports[0].failures().collect();
    assert_eq!(failures.len(), 1, "{}", reports[0]);
    assert_eq!(failures[0].rule, "ranges");
    assert_eq!(failures[0].feature.as_deref(), Some("rate"));
    assert!(failures[0].observed.contains("max 1.5"), "{}", failures[0].observed);
    assert!(!failures[0].samples.is_empty() && failures[0].samples.len() <= 5);
    assert_eq!(failures[0].samples[0]["rate"], serde_json::json!(1.5));
    // Validation on demand writes nothing.
    assert_eq!(watermark(&store, "rides_v").await, Some(at(D1 + DAY - 1)));
    assert_eq!(day2(Defect { rate_out_of_range: true, ..Defect::default() }, "allow").await, vec!["ranges rate"]);
}

#[tokio::test]
async fn new_category_fails_allowed_values() {
    let failed = day2(Defect { new_vehicle: true, ..Defect::default() }, "allow").await;
    assert_eq!(failed, vec!["allowed_values vehicle"]);
}

#[tokio::test]
async fn row_count_drop_fails_max_row_count_change() {
    let failed = day2(Defect { keep_drivers: Some(30), ..Defect::default() }, "allow").await;
    assert_eq!(failed, vec!["max_row_count_change "]);
}

#[tokio::test]
async fn stale_data_fails_max_staleness() {
    let failed = day2(Defect { stop_hours_early: 6, ..Defect::default() }, "allow").await;
    // Six hours fewer rows is also a 25 % row-count drop.
    assert_eq!(failed, vec!["max_row_count_change ", "max_staleness "]);
}

#[tokio::test]
async fn changed_type_fails_the_schema_contract() {
    let failed = day2(Defect { rate_as_text: true, ..Defect::default() }, "allow").await;
    assert_eq!(failed, vec!["schema rate"]);
}

#[tokio::test]
async fn new_columns_are_reported_or_rejected() {
    assert_eq!(day2(Defect { extra_column: true, ..Defect::default() }, "allow").await, Vec::<String>::new());
    assert_eq!(day2(Defect { extra_column: true, ..Defect::default() }, "reject").await, vec!["schema "]);
}

#[tokio::test]
async fn stop_on_failure_stops_the_run() {
    let (dir, store) = repo("allow").await;
    write_parquet(
        &dir.path().join("data/rides/day2.parquet"),
        &day_batch(D1 + DAY, Defect { new_vehicle: true, ..Defect::default() }),
    );
    // rides_v runs first and fails; with the flag, other_v is not run at all.
    let options =
        MaterializeOptions::default().with_views(["rides_v", "other_v"]).with_stop_on_validation_failure(true);
    let report = store.materialize(at(D1 + DAY), at(D1 + 2 * DAY - 1), &options).await.unwrap();
    assert_eq!(report.views.len(), 1, "{report:?}");
    assert_eq!(report.views[0].outcome, RunOutcome::ValidationFailed);
    assert_eq!(watermark(&store, "other_v").await, Some(at(D1 + DAY - 1)));
    // Without it, the other view proceeds.
    let options = MaterializeOptions::default().with_views(["rides_v", "other_v"]);
    let report = store.materialize(at(D1 + DAY), at(D1 + 2 * DAY - 1), &options).await.unwrap();
    assert_eq!(report.views.len(), 2);
    assert_eq!(watermark(&store, "other_v").await, Some(at(D1 + 2 * DAY - 1)));
    drop(dir);
}

#[tokio::test]
async fn bad_rules_are_definition_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: quality\nregistry: data/registry.json\n").unwrap();
    let bad = defs("allow")
        .replace("rate: 0.02", "rat: 0.02")
        .replace("rate: [0.0, 1.0]", "rate: [1.0, 0.0]")
        .replace("vehicle: [car, bike, van]", "trips: []");
    std::fs::write(dir.path().join("features.yaml"), bad).unwrap();
    write_parquet(&dir.path().join("data/rides/day1.parquet"), &day_batch(D1, Defect::default()));
    write_parquet(&dir.path().join("data/rides_copy/day1.parquet"), &day_batch(D1, Defect::default()));
    let store = feature_store::open(dir.path()).unwrap();
    let e = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    for want in
        ["\"rat\" is not a feature", "minimum 1 is above the maximum 0", "allowed_values.trips: the list is empty"]
    {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
}

#[tokio::test]
async fn profile_summarizes_and_is_stored() {
    let (_dir, store) = repo_with("allow", true).await;
    let p = store.reference_profile("rides_v").await.unwrap().expect("stored");
    assert_eq!(p.rows, 24 * DRIVERS as u64);
    let rate = &p.features["rate"];
    assert_eq!((rate.count, rate.nulls), (1200, 0));
    assert_eq!((rate.min, rate.max), (Some(0.0), Some(0.99)));
    let mut values: Vec<f64> =
        (0..24).flat_map(|h| (0..DRIVERS).map(move |id| ((id * 7 + h) % 100) as f64 / 100.0)).collect();
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!((rate.mean.unwrap() - mean).abs() < 1e-9, "{rate:?}");
    // Quantiles are approximate (t-digest): within a few hundredths here.
    let median = rate.quantiles["p50"];
    assert!((median - values[600]).abs() < 0.03, "{median} vs {}", values[600]);
    let h = rate.histogram.as_ref().unwrap();
    assert_eq!(h.counts.len(), h.cuts.len() + 1);
    assert_eq!(h.counts.iter().sum::<u64>(), 1200);
    // Deciles of a uniform spread put about a tenth in each inner bin; the
    // outer bins (below the minimum, above the maximum) are empty.
    let inner = &h.counts[1..h.counts.len() - 1];
    assert_eq!((h.counts[0], h.counts[h.counts.len() - 1]), (0, 0), "{h:?}");
    assert!(inner.iter().all(|n| (100..=140).contains(n)), "{h:?}");
    let vehicle = &p.features["vehicle"];
    let mut top = vehicle.top_values.clone();
    top.sort();
    assert_eq!(top, vec![("bike".to_owned(), 400), ("car".to_owned(), 400), ("van".to_owned(), 400)]);
    assert!(vehicle.histogram.is_none());
    // A dry run computes without storing; an empty window is refused.
    let before = store.registry().refresh().await.unwrap().version;
    store.profile("rides_v", Some(at(D1)), at(D1 + 5 * HOUR), false).await.unwrap();
    assert_eq!(store.registry().refresh().await.unwrap().version, before);
    let e = store.profile("rides_v", Some(at(D1 - DAY)), at(D1 - 1), true).await.unwrap_err().to_string();
    assert!(e.contains("no rows"), "{e}");
    let e = store.profile("ride_v", None, at(D1), true).await.unwrap_err().to_string();
    assert!(e.contains("rides_v"), "{e}");
}

#[tokio::test]
async fn drift_passes_on_the_same_distribution_and_fails_on_a_shift() {
    assert_eq!(day2_with(Defect::default(), "allow", true).await, Vec::<String>::new());
    assert_eq!(day2_with(Defect { shift_rate: true, ..Defect::default() }, "allow", true).await, vec!["drift rate"]);
    assert_eq!(
        day2_with(Defect { mostly_cars: true, ..Defect::default() }, "allow", true).await,
        vec!["drift vehicle"]
    );
    // A null burst moves the null bin too.
    assert_eq!(
        day2_with(Defect { null_rate_every: Some(10), ..Defect::default() }, "allow", true).await,
        vec!["max_null_fraction rate", "drift rate"]
    );
}

#[tokio::test]
async fn drift_report_names_the_shift_and_warns_without_a_reference() {
    let (dir, store) = repo("allow").await;
    write_parquet(
        &dir.path().join("data/rides/day2.parquet"),
        &day_batch(D1 + DAY, Defect { shift_rate: true, ..Defect::default() }),
    );
    let window = (Some(at(D1 + DAY)), at(D1 + 2 * DAY - 1));
    let views = ["rides_v".to_owned()];
    let reports = store.validate(Some(&views), window.0, window.1).await.unwrap();
    assert!(reports[0].passed(), "{}", reports[0]);
    assert!(reports[0].warnings.iter().any(|w| w.contains("no reference profile")), "{:?}", reports[0].warnings);
    store.profile("rides_v", Some(at(D1)), at(D1 + DAY - 1), true).await.unwrap();
    let reports = store.validate(Some(&views), window.0, window.1).await.unwrap();
    let f: Vec<_> = reports[0].failures().collect();
    assert_eq!(f.len(), 1, "{}", reports[0]);
    assert!(f[0].observed.starts_with("psi "), "{}", f[0].observed);
    assert!(f[0].observed.contains("largest shift"), "{}", f[0].observed);
    assert_eq!(f[0].threshold, "psi <= 0.2");
    // Same data as the reference: every drift result passes with a PSI near zero.
    let same = store.validate(Some(&views), Some(at(D1)), at(D1 + DAY - 1)).await.unwrap();
    let drift: Vec<_> = same[0].results.iter().filter(|r| r.rule == "drift").collect();
    assert_eq!(drift.len(), 3, "{}", same[0]);
    assert!(drift.iter().all(|r| r.passed && r.observed.starts_with("psi 0.00")), "{}", same[0]);
}

#[tokio::test]
async fn bad_drift_rules_are_definition_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: quality\nregistry: data/registry.json\n").unwrap();
    write_parquet(&dir.path().join("data/rides/day1.parquet"), &day_batch(D1, Defect::default()));
    write_parquet(&dir.path().join("data/rides_copy/day1.parquet"), &day_batch(D1, Defect::default()));
    let bad = defs("allow").replace("{method: psi, threshold: 0.2}", "{method: psi, threshold: 0, features: [rat]}");
    std::fs::write(dir.path().join("features.yaml"), bad).unwrap();
    let store = feature_store::open(dir.path()).unwrap();
    let e = store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap_err().to_string();
    for want in ["drift.threshold: 0 must be a positive number", "drift.features: \"rat\" is not a feature"] {
        assert!(e.contains(want), "missing {want:?} in {e}");
    }
    let unknown = defs("allow").replace("method: psi", "method: ks");
    std::fs::write(dir.path().join("features.yaml"), unknown).unwrap();
    let e = store.repo_definitions().unwrap_err().to_string();
    assert!(e.contains("ks") && e.contains("psi"), "{e}");
}

/// Drift where deciles alone are blind: a constant that jumps, a 0/1 flag
/// that takes a new value, a feature that was all null; and windows too
/// small to measure.
#[tokio::test]
async fn drift_sees_values_beyond_the_reference_range_and_skips_tiny_windows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("feature_store.yaml"), "project: edge\nregistry: data/registry.json\n").unwrap();
    std::fs::write(
        dir.path().join("features.yaml"),
        "
entities: [{name: driver, join_keys: [driver_id]}]
sources: [{name: s, path: data/s, timestamp_field: event_timestamp}]
feature_views:
  - name: v
    entities: [driver]
    source: s
    schema: [{name: constant, dtype: float64}, {name: flag, dtype: int64}, {name: empty, dtype: float64}, {name: label, dtype: string}]
    validation:
      drift: {method: psi, threshold: 0.2}
",
    )
    .unwrap();
    let day = |start: i64, rows: i64, shifted: bool| {
        let ids: Vec<i64> = (0..rows).collect();
        let ts: Vec<i64> = (0..rows).map(|i| start + i * 60_000_000).collect();
        let constant: Vec<f64> = vec![if shifted { 100.0 } else { 7.0 }; rows as usize];
        let flag: Vec<i64> = (0..rows)
            .map(|i| {
                if i % 2 == 0 {
                    0
                } else if shifted {
                    5
                } else {
                    1
                }
            })
            .collect();
        let empty: Vec<Option<f64>> = (0..rows).map(|i| shifted.then_some(i as f64)).collect();
        let label: Vec<Option<&str>> = (0..rows).map(|_| shifted.then_some("x")).collect();
        RecordBatch::try_from_iter([
            ("driver_id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("event_timestamp", Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as ArrayRef),
            ("constant", Arc::new(Float64Array::from(constant)) as ArrayRef),
            ("flag", Arc::new(Int64Array::from(flag)) as ArrayRef),
            ("empty", Arc::new(Float64Array::from(empty)) as ArrayRef),
            ("label", Arc::new(StringArray::from(label)) as ArrayRef),
        ])
        .unwrap()
    };
    write_parquet(&dir.path().join("data/s/day1.parquet"), &day(D1, 1000, false));
    write_parquet(&dir.path().join("data/s/day2.parquet"), &day(D1 + DAY, 1000, true));
    write_parquet(&dir.path().join("data/s/day3.parquet"), &day(D1 + 2 * DAY, 20, true));
    let store = feature_store::open(dir.path()).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let p = store.profile("v", Some(at(D1)), at(D1 + DAY - 1), true).await.unwrap();
    assert_eq!(p.features["flag"].histogram.as_ref().unwrap().cuts, vec![0.0, 1.0, 1.0f64.next_up()]);
    let views = ["v".to_owned()];
    let failed = |r: &feature_store::quality::ValidationReport| {
        r.failures().map(|x| x.feature.clone().unwrap_or_default()).collect::<Vec<_>>()
    };
    let same = store.validate(Some(&views), Some(at(D1)), at(D1 + DAY - 1)).await.unwrap();
    assert!(same[0].passed(), "{}", same[0]);
    let shifted = store.validate(Some(&views), Some(at(D1 + DAY)), at(D1 + 2 * DAY - 1)).await.unwrap();
    assert_eq!(failed(&shifted[0]), ["constant", "flag", "empty", "label"], "{}", shifted[0]);
    let constant = shifted[0].results.iter().find(|r| r.feature.as_deref() == Some("constant")).unwrap();
    assert!(constant.observed.contains("largest shift [7, 7]: 100.0% -> 0.0%"), "{}", constant.observed);
    // 20 rows, and no rows at all: noted, not failed.
    for (start, end) in [(D1 + 2 * DAY, D1 + 3 * DAY - 1), (D1 + 5 * DAY, D1 + 6 * DAY)] {
        let r = store.validate(Some(&views), Some(at(start)), at(end)).await.unwrap();
        assert!(r[0].passed(), "{}", r[0]);
        assert!(r[0].warnings.iter().any(|w| w.contains("fewer than min_rows 100")), "{:?}", r[0].warnings);
    }
}

/// A column that another view over the same source reads is registered,
/// so validation does not call it new.
#[tokio::test]
async fn columns_another_view_of_the_source_reads_are_not_new() {
    let (dir, store) = repo("allow").await;
    let views = ["other_v".to_owned()];
    let new_columns = |r: &feature_store::quality::ValidationReport| -> Vec<String> {
        r.warnings.iter().filter(|w| w.contains("columns not in the registry")).cloned().collect()
    };
    let reports = store.validate(Some(&views), Some(at(D1)), at(D1 + DAY - 1)).await.unwrap();
    let before = new_columns(&reports[0]);
    assert!(before.len() == 1 && before[0].contains("rate") && before[0].contains("vehicle"), "{before:?}");
    let more = defs("allow")
        + "  - {name: copy_v, entities: [driver], source: rides_copy, schema: [{name: rate, dtype: float64}, {name: vehicle, dtype: string}]}\n";
    std::fs::write(dir.path().join("features.yaml"), more).unwrap();
    store.apply(&store.repo_definitions().unwrap(), ApplyMode::Sync).await.unwrap();
    let reports = store.validate(Some(&views), Some(at(D1)), at(D1 + DAY - 1)).await.unwrap();
    assert_eq!(new_columns(&reports[0]), Vec::<String>::new());
}
