//! `validate`, `status` and the Prometheus metrics file of materialization runs.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use feature_store::registry::RunOutcome;
use feature_store::{FeatureStore, MaterializeReport};

use crate::output::{json, table};

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Checks views' windows against their rules; errors (exit 1) when a rule fails.
pub(crate) async fn validate(
    store: &FeatureStore,
    views: &[String],
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    as_json: bool,
) -> anyhow::Result<()> {
    let reports = store.validate(Some(views), start, end).await?;
    if reports.is_empty() {
        anyhow::bail!("no feature view declares validation rules; name views to check their schema contract");
    }
    if as_json {
        json(&reports)?;
    } else {
        let mut rows = Vec::new();
        for r in &reports {
            for x in &r.results {
                rows.push(vec![
                    r.view.clone(),
                    x.rule.clone(),
                    x.feature.clone().unwrap_or_default(),
                    x.observed.clone(),
                    x.threshold.clone(),
                    if x.passed { "ok".into() } else { "FAIL".into() },
                ]);
            }
            if r.results.is_empty() {
                rows.push(vec![
                    r.view.clone(),
                    "schema".into(),
                    String::new(),
                    "as registered".into(),
                    String::new(),
                    "ok".into(),
                ]);
            }
        }
        table(&["VIEW", "RULE", "FEATURE", "OBSERVED", "THRESHOLD", "RESULT"], rows);
        for r in &reports {
            for x in r.failures() {
                for s in &x.samples {
                    println!("{} {} {}: e.g. {s}", r.view, x.rule, x.feature.as_deref().unwrap_or(""));
                }
            }
            for w in &r.warnings {
                println!("{}: note: {w}", r.view);
            }
        }
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed()).map(|r| r.view.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!("validation failed for {}", failed.join(", "));
    }
    Ok(())
}

/// Computes (and stores) a reference profile; prints one row per feature.
pub(crate) async fn profile(
    store: &FeatureStore,
    view: &str,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    save: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let p = store.profile(view, start, end, save).await?;
    if as_json {
        return json(&p);
    }
    let num = |x: Option<f64>| {
        x.map_or_else(String::new, |v| format!("{v:.6}").trim_end_matches('0').trim_end_matches('.').to_owned())
    };
    let rows = p
        .features
        .iter()
        .map(|(name, f)| {
            let shape = if let Some(h) = &f.histogram {
                format!("{} bins", h.counts.len())
            } else if !f.top_values.is_empty() {
                let top: Vec<String> = f.top_values.iter().take(3).map(|(v, n)| format!("{v}:{n}")).collect();
                format!("top {}", top.join(","))
            } else {
                String::new()
            };
            vec![
                name.clone(),
                f.dtype.clone(),
                f.count.to_string(),
                format!("{:.4}", f.null_fraction),
                num(f.min),
                num(f.quantiles.get("p50").copied()),
                num(f.max),
                num(f.mean),
                num(f.std),
                shape,
            ]
        })
        .collect();
    table(&["FEATURE", "TYPE", "COUNT", "NULLS", "MIN", "P50", "MAX", "MEAN", "STD", "BINS"], rows);
    let window = p
        .start
        .map_or_else(|| format!("all history up to {}", when(&p.end)), |s| format!("[{}, {}]", when(&s), when(&p.end)));
    eprintln!(
        "profile of \"{view}\", {window}: {} rows{}",
        p.rows,
        if save { "; stored as the reference for its drift rule" } else { " (not stored: --dry-run)" }
    );
    Ok(())
}

/// Per view: newest event time online, watermark, freshness lag, last run.
pub(crate) async fn status(store: &FeatureStore, as_json: bool) -> anyhow::Result<()> {
    let doc = store.registry().refresh().await?;
    let project = doc.project(store.project());
    let now = Utc::now();
    let mut items = Vec::new();
    for r in project.registry().feature_views.values().filter(|r| r.spec.online) {
        let state = project.registry().view_state.get(&r.spec.name).cloned().unwrap_or_default();
        let lag = state.newest_event_ts.map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        let last = state.runs.last().cloned();
        items.push(serde_json::json!({
            "view": r.spec.name,
            "newest_event_ts": state.newest_event_ts,
            "watermark": state.watermark,
            "freshness_lag_seconds": lag,
            "last_run": last,
            "ingest": state.ingest,
            "ingest_gap": state.ingest_gap,
        }));
    }
    if as_json {
        return json(&items);
    }
    let rows = items
        .iter()
        .map(|i| {
            let t = |k: &str| {
                i[k].as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map_or("-".into(), |d| when(&d.with_timezone(&Utc)))
            };
            let lag = i["freshness_lag_seconds"].as_f64().map_or("-".into(), |s| {
                feature_store::duration::format_duration(std::time::Duration::from_secs(s.max(0.0) as u64))
            });
            let run = &i["last_run"];
            let last = if run.is_null() {
                "never".to_owned()
            } else {
                format!(
                    "{} {} ({} rows, {} entities)",
                    run["started_at"]
                        .as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map_or(String::new(), |d| when(&d.with_timezone(&Utc))),
                    run["outcome"].as_str().unwrap_or(""),
                    run["rows_read"],
                    run["entities_written"]
                )
            };
            let ing = &i["ingest"];
            let ingest = if !i["ingest_gap"].is_null() {
                // A run limited to other views committed events this view has not seen.
                format!("missing events from {}: run materialize-incremental", t("ingest_gap"))
            } else if ing.is_null() {
                "-".to_owned()
            } else {
                let lag: u64 = ing["lag"].as_array().map_or(0, |l| l.iter().filter_map(|p| p[1].as_u64()).sum());
                let p99 = ing["freshness_ms"][1]
                    .as_f64()
                    .map_or(String::new(), |v| format!(", p99 {}", crate::output::freshness(v)));
                let at = ing["at"]
                    .as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map_or(String::new(), |d| format!(" {}", when(&d.with_timezone(&Utc))));
                format!("{}: lag {lag}{p99}{at}", ing["source"].as_str().unwrap_or(""))
            };
            vec![i["view"].as_str().unwrap_or("").to_owned(), t("newest_event_ts"), t("watermark"), lag, last, ingest]
        })
        .collect();
    table(&["VIEW", "NEWEST ONLINE", "WATERMARK", "FRESHNESS LAG", "LAST RUN", "INGEST"], rows);
    Ok(())
}

/// Writes the run's metrics in the Prometheus text format (atomically: a
/// scraper never sees half a file).
pub(crate) async fn write_metrics(store: &FeatureStore, report: &MaterializeReport, path: &Path) -> anyhow::Result<()> {
    let doc = store.registry().refresh().await?;
    let project = doc.project(store.project());
    let now = Utc::now();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (view, v) in samples {
            let _ = writeln!(out, "{name}{{project=\"{}\",view=\"{}\"}} {v}", escape(store.project()), escape(&view));
        }
    };
    let per_view = |f: &dyn Fn(&feature_store::ViewMaterialization) -> f64| -> Vec<(String, f64)> {
        report.views.iter().map(|v| (v.view.clone(), f(v))).collect()
    };
    family(
        "feature_store_materialize_rows_read_total",
        "counter",
        "Offline rows read by this materialization run.",
        per_view(&|v| v.rows_read as f64),
    );
    family(
        "feature_store_materialize_entities_written_total",
        "counter",
        "Entities written online by this materialization run.",
        per_view(&|v| v.entities_written as f64),
    );
    family(
        "feature_store_materialize_run_duration_seconds",
        "gauge",
        "Wall time of this materialization run per view.",
        per_view(&|v| v.seconds),
    );
    family(
        "feature_store_materialize_success",
        "gauge",
        "1 if the view's window was written and its watermark advanced (or it was already up to date), else 0.",
        per_view(&|v| f64::from(u8::from(matches!(v.outcome, RunOutcome::Succeeded | RunOutcome::UpToDate)))),
    );
    family(
        "feature_store_validation_passed",
        "gauge",
        "1 if the window passed its data-quality gate, else 0.",
        per_view(&|v| f64::from(u8::from(v.validation.as_ref().is_none_or(|r| r.passed())))),
    );
    family(
        "feature_store_validation_failed_rules",
        "gauge",
        "Number of data-quality rules the window failed.",
        per_view(&|v| v.validation.as_ref().map_or(0, |r| r.failures().count()) as f64),
    );
    let lag: Vec<(String, f64)> = project
        .registry()
        .view_state
        .iter()
        .filter_map(|(name, s)| s.newest_event_ts.map(|t| (name.clone(), (now - t).num_milliseconds() as f64 / 1000.0)))
        .collect();
    family(
        "feature_store_freshness_lag_seconds",
        "gauge",
        "Seconds between now and the newest event time materialized online.",
        lag,
    );
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, out).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
