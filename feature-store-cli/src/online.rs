//! `materialize`, `materialize-incremental` and `online`: load the online
//! store and read it back in the shape of Feast's feature server.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use feature_store::registry::RunOutcome;
use feature_store::{FeatureStore, Features, MaterializeOptions, MaterializeReport, OnlineOptions, ValueType};

/// Parses an ISO 8601 instant: with an offset, naive (taken as UTC), a date, or `now`.
pub(crate) fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(Utc::now());
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    bail!("invalid time \"{text}\": use ISO 8601, e.g. 2024-05-01T12:00:00Z, 2024-05-01 (UTC midnight) or now")
}

/// A progress bar on stderr while views are materialized: drawn only on a
/// terminal (indicatif hides it otherwise) and never with `--json`.
fn progress(json: bool) -> (feature_store::ProgressFn, indicatif::ProgressBar) {
    let bar = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr_with_hz(10))
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("[{bar:30}] view {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let handle = bar.clone();
    let started = Arc::new(Mutex::new((String::new(), Instant::now())));
    let callback: feature_store::ProgressFn = Arc::new(move |p: &feature_store::MaterializeProgress| {
        let mut s = started.lock().expect("poisoned");
        if s.0 != p.view {
            *s = (p.view.clone(), Instant::now());
        }
        let rate = p.entities_written as f64 / s.1.elapsed().as_secs_f64().max(1e-3);
        handle.set_length(p.view_count as u64);
        handle.set_position(p.view_index as u64 + 1);
        handle.set_message(format!("{}: {} entities ({rate:.0}/s)", p.view, p.entities_written));
    });
    (callback, bar)
}

pub(crate) async fn materialize(
    store: &FeatureStore,
    start: Option<DateTime<Utc>>,
    end: DateTime<Utc>,
    views: Vec<String>,
    flags: &crate::RunFlags,
    json: bool,
) -> anyhow::Result<()> {
    if store.config().online_store.kind == "memory" {
        // The values would vanish when this process exits while the registry's
        // watermarks advance, so a later incremental run would skip them.
        anyhow::bail!(
            "online_store type memory keeps values inside one process; a materialize command would write them and \
             exit, losing them while advancing the views' watermarks. Use sqlite, lmdb or redis for the command line \
             (memory is for tests and for programs that materialize and read in the same process)"
        );
    }
    let mut options = MaterializeOptions::default().with_stop_on_validation_failure(flags.stop_on_failure);
    if !views.is_empty() {
        options = options.with_views(views);
    }
    let (callback, bar) = progress(json);
    options.progress = Some(callback);
    let report = match start {
        Some(start) => store.materialize(start, end, &options).await,
        None => store.materialize_incremental(end, &options).await,
    };
    bar.finish_and_clear();
    let report = report?;
    if let Some(path) = &flags.metrics_file {
        crate::quality::write_metrics(store, &report, path).await?;
    }
    if json {
        crate::output::json(&report)?;
    } else {
        print_report(&report);
    }
    let failed: Vec<&str> = report.failed_views().iter().map(|v| v.view.as_str()).collect();
    if !failed.is_empty() {
        anyhow::bail!(
            "validation failed for {}: nothing written for them and their watermarks unchanged",
            failed.join(", ")
        );
    }
    Ok(())
}

fn print_report(report: &MaterializeReport) {
    for v in &report.views {
        if let Some(validation) = v.validation.as_ref().filter(|r| !r.passed() || !r.warnings.is_empty()) {
            print!("{validation}");
        }
        let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let start = v.start.as_ref().map_or_else(|| "beginning".to_owned(), fmt);
        if v.outcome == RunOutcome::UpToDate {
            println!("{}: up to date (materialized to {start}, after the end {}): nothing to do", v.view, fmt(&v.end));
            continue;
        }
        let written = match v.tiles_written {
            Some(n) => format!("aggregation tiles written {n}"),
            None => format!("entities written {}", v.entities_written),
        };
        println!(
            "{}: [{start}, {}] rows read {}, {written}{}, {:.2} s",
            v.view,
            fmt(&v.end),
            v.rows_read,
            if v.skipped_older > 0 {
                format!(" ({} skipped: newer value online)", v.skipped_older)
            } else {
                String::new()
            },
            v.seconds
        );
        if let Some(w) = &v.watermark_kept {
            println!(
                "  watermark kept at {}: this window starts after it, and the gap between was never loaded \
                 (materialize-incremental fills it)",
                fmt(w)
            );
        }
    }
    let count = |o: RunOutcome| report.views.iter().filter(|v| v.outcome == o).count();
    let (done, current, failed) =
        (count(RunOutcome::Succeeded), count(RunOutcome::UpToDate), report.failed_views().len());
    let mut summary = format!(
        "Materialized {done} view(s): {} rows read, {} entities written in {:.2} s",
        report.rows_read(),
        report.entities_written(),
        report.seconds
    );
    if current > 0 {
        summary.push_str(&format!("; {current} already up to date"));
    }
    if failed > 0 {
        summary.push_str(&format!("; {failed} failed validation (nothing written for them)"));
    }
    eprintln!("{summary}");
}

/// Builds entity rows from `key=value[,key=value]` arguments, typed by the registry.
async fn entity_rows(store: &FeatureStore, args: &[String]) -> anyhow::Result<RecordBatch> {
    if args.is_empty() {
        bail!("give at least one --entity key=value");
    }
    let rows = key_values("--entity", args)?;
    let mut names: Vec<String> = rows[0].iter().map(|(k, _)| k.clone()).collect();
    names.sort();
    let entities = store.list_entities().await?;
    let key_type = |name: &str| {
        entities.iter().flat_map(|e| e.spec.join_keys.iter()).find(|k| k.name == name).and_then(|k| k.dtype.clone())
    };
    let mut columns: Vec<(String, ArrayRef)> = Vec::new();
    for name in &names {
        let values: Vec<&str> = rows
            .iter()
            .map(|r| r.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).expect("same keys"))
            .collect();
        let col: ArrayRef = match key_type(name) {
            Some(ValueType::Int32 | ValueType::Int64) => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        v.parse::<i64>().with_context(|| format!("entity key \"{name}\" is an integer; \"{v}\" is not"))
                    })
                    .collect::<anyhow::Result<Int64Array>>()?,
            ),
            Some(ValueType::Bool) => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        v.parse::<bool>().with_context(|| format!("entity key \"{name}\" is a bool; \"{v}\" is not"))
                    })
                    .collect::<anyhow::Result<BooleanArray>>()?,
            ),
            _ => Arc::new(StringArray::from(values)),
        };
        columns.push((name.clone(), col));
    }
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// Splits `k=v[,k=v]` arguments of `flag` into rows of pairs, every row with the same keys.
fn key_values(flag: &str, args: &[String]) -> anyhow::Result<Vec<Vec<(String, String)>>> {
    Ok(quoted_key_values(flag, args)?.into_iter().map(|r| r.into_iter().map(|(k, v, _)| (k, v)).collect()).collect())
}

/// [`key_values`] that also says which values were in double quotes: those
/// are taken as written (commas, `=`, `null` and the empty string included;
/// `""` inside is one quote), where an unquoted empty value or `null` is a null.
fn quoted_key_values(flag: &str, args: &[String]) -> anyhow::Result<Vec<Vec<(String, String, bool)>>> {
    let rows: Vec<Vec<(String, String, bool)>> = args
        .iter()
        .map(|a| split_pairs(a).with_context(|| format!("{flag} \"{a}\"")))
        .collect::<anyhow::Result<_>>()?;
    let names = |r: &[(String, String, bool)]| {
        let mut n: Vec<String> = r.iter().map(|(k, _, _)| k.clone()).collect();
        n.sort();
        n
    };
    for (a, r) in args.iter().zip(&rows) {
        if names(r) != names(&rows[0]) {
            bail!(
                "{flag} \"{a}\" has keys {} but the first has {}; give every row the same keys",
                names(r).join(","),
                names(&rows[0]).join(",")
            );
        }
    }
    Ok(rows)
}

fn split_pairs(a: &str) -> anyhow::Result<Vec<(String, String, bool)>> {
    let mut out = Vec::new();
    let mut rest = a;
    loop {
        let (key, after) =
            rest.split_once('=').with_context(|| "expected key=value (several: k1=v1,k2=v2)".to_owned())?;
        let after = after.trim_start();
        let (value, quoted, tail) = if let Some(inner) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = inner.char_indices();
            let end = loop {
                match chars.next() {
                    None => bail!("the quote opened for \"{}\" is not closed", key.trim()),
                    Some((i, '"')) if inner[i + 1..].starts_with('"') => {
                        value.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => value.push(c),
                }
            };
            let tail = inner[end..].trim_start();
            if !(tail.is_empty() || tail.starts_with(',')) {
                bail!("after the quoted value of \"{}\" comes \"{tail}\", not a comma", key.trim());
            }
            (value, true, tail)
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), false, &after[end..])
        };
        out.push((key.trim().to_owned(), value, quoted));
        match tail.strip_prefix(',') {
            Some(next) => rest = next,
            None => return Ok(out),
        }
    }
}

/// Request data columns from `field=value` arguments, typed by the project's request sources.
async fn request_columns(store: &FeatureStore, args: &[String]) -> anyhow::Result<Vec<(String, ArrayRef)>> {
    use arrow::array::{Float32Array, Float64Array, Int32Array, TimestampMicrosecondArray};
    let rows = quoted_key_values("--request", args)?;
    let sources = store.list_request_sources().await?;
    let mut out: Vec<(String, ArrayRef)> = Vec::new();
    for (name, _, _) in &rows[0] {
        let dtype = sources
            .iter()
            .flat_map(|s| s.spec.schema.iter())
            .find(|f| &f.name == name)
            .map(|f| f.dtype.clone())
            .with_context(|| {
                let known: Vec<String> =
                    sources.iter().flat_map(|s| s.spec.schema.iter().map(|f| f.name.clone())).collect();
                format!("--request field \"{name}\" is in no request source; request fields: {}", known.join(", "))
            })?;
        let values: Vec<Option<&str>> = rows
            .iter()
            .map(|r| {
                let (_, v, quoted) = r.iter().find(|(k, _, _)| k == name).expect("same fields");
                (*quoted || !v.is_empty() && v != "null").then_some(v.as_str())
            })
            .collect();
        let bad = |v: &str, what: &str| {
            format!(
                "--request field \"{name}\" is {what}; \"{v}\" is not (null or an empty value is a null; \
                 in double quotes, \"\" is an empty string)"
            )
        };
        let col: ArrayRef = match dtype {
            ValueType::Float64 | ValueType::Float32 => {
                let parsed = values
                    .iter()
                    .map(|v| v.map(|v| v.parse::<f64>().with_context(|| bad(v, "a number"))).transpose())
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if dtype == ValueType::Float32 {
                    Arc::new(parsed.iter().map(|v| v.map(|v| v as f32)).collect::<Float32Array>())
                } else {
                    Arc::new(Float64Array::from(parsed))
                }
            }
            ValueType::Int64 | ValueType::Int32 => {
                let parsed = values
                    .iter()
                    .map(|v| v.map(|v| v.parse::<i64>().with_context(|| bad(v, "an integer"))).transpose())
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if dtype == ValueType::Int32 {
                    let narrow = parsed
                        .iter()
                        .map(|v| {
                            v.map(i32::try_from).transpose().map_err(|_| {
                                anyhow::anyhow!("--request field \"{name}\" is int32; {v:?} is out of range", v = v)
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Arc::new(Int32Array::from(narrow))
                } else {
                    Arc::new(Int64Array::from(parsed))
                }
            }
            ValueType::Bool => Arc::new(
                values
                    .iter()
                    .map(|v| v.map(|v| v.parse::<bool>().with_context(|| bad(v, "a bool (true/false)"))).transpose())
                    .collect::<anyhow::Result<BooleanArray>>()?,
            ),
            ValueType::Timestamp => Arc::new(
                TimestampMicrosecondArray::from(
                    values
                        .iter()
                        .map(|v| v.map(|v| parse_time(v).map(|t| t.timestamp_micros())).transpose())
                        .collect::<anyhow::Result<Vec<_>>>()?,
                )
                .with_timezone("UTC"),
            ),
            ValueType::String => Arc::new(StringArray::from(values)),
            other => bail!(
                "--request field \"{name}\" is {other}, which the command line cannot give; use the library or Python"
            ),
        };
        out.push((name.clone(), col));
    }
    Ok(out)
}

pub(crate) async fn online(
    store: &FeatureStore,
    features: &Features,
    entities: &[String],
    requests: &[String],
    full_feature_names: bool,
    json: bool,
    table: bool,
) -> anyhow::Result<()> {
    if !entities.is_empty() && !requests.is_empty() && entities.len() != requests.len() {
        bail!(
            "{} --entity rows but {} --request rows; give one --request per --entity, in the same order",
            entities.len(),
            requests.len()
        );
    }
    let mut columns: Vec<(String, ArrayRef)> = if entities.is_empty() {
        Vec::new()
    } else {
        let keys = entity_rows(store, entities).await?;
        keys.schema().fields().iter().map(|f| f.name().clone()).zip(keys.columns().iter().cloned()).collect()
    };
    if !requests.is_empty() {
        for (name, col) in request_columns(store, requests).await? {
            if columns.iter().any(|(n, _)| n == &name) {
                bail!("\"{name}\" is given both as an entity key and as request data");
            }
            columns.push((name, col));
        }
    }
    let batch = RecordBatch::try_from_iter(columns)?;
    let options = OnlineOptions::default().with_full_feature_names(full_feature_names);
    let response = store.get_online_features(features, &batch, &options).await?;
    if json || !(table || std::io::stdout().is_terminal()) {
        println!("{}", serde_json::to_string_pretty(&response.to_feast_json())?);
    } else {
        print!("{}", online_table(&response, Utc::now()));
    }
    Ok(())
}

/// The response for people: one line per entity row, its keys, then each
/// feature's value with, where it is not simply present, its status, and the
/// age of the stored row.
fn online_table(response: &feature_store::online::OnlineResponse, now: DateTime<Utc>) -> String {
    use arrow::array::Array as _;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let names = response.column_names();
    let keys = response.key_column_count();
    let values = response.values();
    let options = FormatOptions::default().with_null("null");
    let mut rows: Vec<Vec<String>> = vec![names.iter().map(|n| (*n).to_owned()).collect()];
    for r in 0..response.num_rows() {
        let mut row = Vec::new();
        for (c, column) in values.columns().iter().enumerate() {
            let value = ArrayFormatter::try_new(column.as_ref(), &options)
                .map_or_else(|_| "?".to_owned(), |f| f.value(r).to_string());
            if c < keys {
                row.push(value);
                continue;
            }
            let status = response.feature_statuses(c - keys)[r];
            let age = response.feature_event_micros(c - keys)[r]
                .and_then(DateTime::from_timestamp_micros)
                .map(|t| format_age(now - t));
            row.push(match (status.as_str(), age) {
                // An on-demand feature may have a value over missing inputs (COALESCE).
                ("NOT_FOUND", _) if column.is_null(r) => "not found".to_owned(),
                ("NOT_FOUND", _) => format!("{value} (NOT_FOUND)"),
                ("PRESENT", Some(age)) => format!("{value} ({age})"),
                ("PRESENT", None) => value,
                (other, Some(age)) => format!("{value} ({other}, {age})"),
                (other, None) => format!("{value} ({other})"),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..names.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// An age to the second, in its two largest units: `42s old`, `5m 3s old`,
/// `2h 13m old`, `3d 4h old`; an event time ahead of the clock says so.
fn format_age(age: chrono::TimeDelta) -> String {
    let s = age.num_seconds();
    if s < 0 {
        return "event time in the future".to_owned();
    }
    let age = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    };
    format!("{age} old")
}

#[cfg(test)]
mod tests {
    use super::{format_age, parse_time, split_pairs};

    #[test]
    fn quoted_values_are_taken_as_written() {
        let pairs = |a: &str| split_pairs(a).map_err(|e| e.to_string());
        let p = |k: &str, v: &str, q| (k.to_owned(), v.to_owned(), q);
        assert_eq!(pairs("a=1, b = x ,c="), Ok(vec![p("a", "1", false), p("b", "x", false), p("c", "", false)]));
        assert_eq!(
            pairs(r#"label="",note="a, b=c",q="say ""hi""", n="null""#),
            Ok(vec![
                p("label", "", true),
                p("note", "a, b=c", true),
                p("q", r#"say "hi""#, true),
                p("n", "null", true)
            ])
        );
        assert!(pairs(r#"a="open"#).unwrap_err().contains("not closed"));
        assert!(pairs(r#"a="x"y,b=1"#).unwrap_err().contains("not a comma"));
        assert!(pairs("a=1,").unwrap_err().contains("expected key=value"));
    }

    #[test]
    fn ages_read_in_two_units() {
        let age = |s| format_age(chrono::TimeDelta::seconds(s));
        assert_eq!(
            [age(42), age(303), age(7980), age(360_000), age(-5)],
            ["42s old", "5m 3s old", "2h 13m old", "4d 4h old", "event time in the future"]
        );
    }

    #[test]
    fn times() {
        let z = parse_time("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(parse_time("2024-05-01T14:00:00+02:00").unwrap(), z);
        assert_eq!(parse_time("2024-05-01 12:00:00").unwrap(), z);
        assert_eq!(parse_time("2024-05-01").unwrap().to_rfc3339(), "2024-05-01T00:00:00+00:00");
        assert!(parse_time("yesterday").unwrap_err().to_string().contains("ISO 8601"));
    }
}
