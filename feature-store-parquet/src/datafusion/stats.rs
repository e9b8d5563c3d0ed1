//! Statistics of a view's window for the data-quality gate: one aggregate
//! query (DataFusion streams the Parquet files through it once), then, only
//! for rules that found offending rows, a small `LIMIT` query per rule for
//! sample rows.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::functions_aggregate::expr_fn::{approx_percentile_cont, avg, count, max, min, stddev_pop, sum};
use datafusion::logical_expr::{Expr, cast, ident, lit, when};
use feature_store_core::quality::profile::{
    DECILES, FeatureProfile, Histogram, PROFILE_QUANTILES, Profile, TOP_VALUES, binning,
};
use feature_store_core::quality::{FeatureStats, StatsRequest, WindowStats};
use feature_store_core::{Error as CoreError, Result as CoreResult, UTC};

use super::historical::{Engine, SourceRead, plan_source_read, read_planned, read_source_in, window_of};
use super::latest::window_predicate;
use super::{df_error, session};
use crate::files::ResolvedSource;
use datafusion::prelude::DataFrame;

const ROWS: &str = "__rows";
const MAX_TS: &str = "__max_ts";

fn one_if(condition: Expr) -> Expr {
    sum(when(condition, lit(1i64)).otherwise(lit(0i64)).expect("when/otherwise"))
}

pub(crate) async fn window_stats(
    engine: Engine,
    req: StatsRequest,
    resolved: &ResolvedSource,
) -> CoreResult<WindowStats> {
    let ctx = session(engine.memory_limit, engine.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("validating feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    // The contract per file first: a file with a changed type would otherwise
    // fail the query with a merge error that names no file.
    let window = window_of(req.start, Some(req.end));
    let planned = plan_source_read(resolved, Some(window), &context).await?;
    let contract = schema_contract(&req, &planned);
    // Without rules only the contract is asked for: no pass over the rows.
    if !contract.schema_issues.is_empty() || view.validation.is_empty() {
        return Ok(contract);
    }
    let df = read_planned(&ctx, source, &planned, &context).await?;
    let schema = df.schema().as_arrow().clone();
    let predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let (aggregates, offending) = rule_aggregates(&req);
    let batch =
        one_row(df.clone().filter(predicate.clone()).and_then(|d| d.aggregate(vec![], aggregates)), &context).await?;
    let mut out = read_stats(&req, &batch, contract);
    if req.samples > 0 {
        add_samples(&req, &df, &predicate, offending, &mut out, &context).await?;
    }
    Ok(out)
}

/// Every file the window reads against the view: features present with an
/// accepted type, and columns the registry does not know.
fn schema_contract(req: &StatsRequest, planned: &SourceRead) -> WindowStats {
    let (source, view) = (&req.source, &req.view);
    let files = &planned.files;
    let mut contract = WindowStats::default();
    // Partitions the window skips are not read, so not checked either.
    for (i, schema) in planned.schemas.iter().filter(|(i, _)| planned.read.contains(i)) {
        let file = files.file_url(&files.files[*i]);
        for f in &view.schema {
            match schema.field_with_name(source.source_column(&f.name)) {
                Err(_) if files.partition_columns.iter().any(|p| p == source.source_column(&f.name)) => {}
                Err(_) => contract.schema_issues.push((f.name.clone(), file.clone(), "no such column".into())),
                Ok(field) if !f.dtype.accepts_arrow(field.data_type()) => contract.schema_issues.push((
                    f.name.clone(),
                    file.clone(),
                    feature_store_core::describe_arrow(field.data_type()),
                )),
                Ok(_) => {}
            }
        }
        for field in schema.fields() {
            let name = source.mapped_name(field.name());
            let known = view.feature(name).is_some()
                || req.join_keys.iter().any(|k| k.name == name)
                || field.name() == &source.timestamp_field
                || source.created_timestamp_field.as_deref() == Some(field.name().as_str());
            if !known && !contract.new_columns.iter().any(|(c, _)| c == name) {
                contract.new_columns.push((name.to_owned(), file.clone()));
            }
        }
    }
    contract
}

/// Conditions marking a row that breaks a rule: (feature, rule, condition).
type Offending = Vec<(String, &'static str, Expr)>;

/// The one aggregate pass: row count, newest event time, and per feature
/// nulls, min/max/mean, rule violations and drift bins.
fn rule_aggregates(req: &StatsRequest) -> (Vec<Expr>, Offending) {
    let (source, view, rules) = (&req.source, &req.view, &req.view.validation);
    let ts_micros = cast(ident(&source.timestamp_field), DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())));
    // Per feature: which conditions mark an offending row, by rule.
    let mut offending: Vec<(String, &'static str, Expr)> = Vec::new();
    let mut aggregates = vec![count(lit(1i64)).alias(ROWS), max(ts_micros).alias(MAX_TS)];
    for f in &view.schema {
        let c = ident(source.source_column(&f.name));
        aggregates.push(one_if(c.clone().is_null()).alias(format!("{}__nulls", f.name)));
        if f.dtype.is_numeric() {
            let x = cast(c.clone(), DataType::Float64);
            aggregates.push(min(x.clone()).alias(format!("{}__min", f.name)));
            aggregates.push(max(x.clone()).alias(format!("{}__max", f.name)));
            aggregates.push(avg(x.clone()).alias(format!("{}__mean", f.name)));
            if let Some((lo, hi)) = rules.ranges.get(&f.name) {
                let mut outside: Option<Expr> = None;
                if let Some(lo) = lo {
                    outside = Some(x.clone().lt(lit(lo.0)));
                }
                if let Some(hi) = hi {
                    let above = x.clone().gt(lit(hi.0));
                    outside = Some(match outside {
                        Some(o) => o.or(above),
                        None => above,
                    });
                }
                if let Some(outside) = outside {
                    aggregates.push(one_if(outside.clone()).alias(format!("{}__oor", f.name)));
                    offending.push((f.name.clone(), "ranges", outside));
                }
            }
        }
        if let Some(values) = rules.allowed_values.get(&f.name) {
            let text = cast(c.clone(), DataType::Utf8);
            let list: Vec<Expr> = values.iter().map(|v| lit(v.clone())).collect();
            let other = c.clone().is_not_null().and(text.in_list(list, true));
            aggregates.push(one_if(other.clone()).alias(format!("{}__na", f.name)));
            offending.push((f.name.clone(), "allowed_values", other));
        }
        if rules.null_limit(&f.name).is_some() {
            offending.push((f.name.clone(), "max_null_fraction", c.is_null()));
        }
    }
    for (f, p) in &req.drift_features() {
        aggregates.extend(bin_counts(&f.name, ident(source.source_column(&f.name)), p));
    }
    (aggregates, offending)
}

/// The aggregate pass's one row as statistics, added to the contract's.
fn read_stats(req: &StatsRequest, batch: &RecordBatch, contract: WindowStats) -> WindowStats {
    let drift = req.drift_features();
    let int = |name: &str| int_of(batch, name);
    let float = |name: &str| float_of(batch, name);
    let max_event_ts = batch.column_by_name(MAX_TS).and_then(|a| {
        let a = a.as_primitive_opt::<TimestampMicrosecondType>()?;
        (!a.is_null(0)).then(|| a.value(0)).and_then(chrono::DateTime::from_timestamp_micros)
    });
    let mut out = contract;
    out.rows = int(ROWS);
    out.max_event_ts = max_event_ts;
    for f in &req.view.schema {
        let mut s = FeatureStats::default();
        s.nulls = int(&format!("{}__nulls", f.name));
        s.min = float(&format!("{}__min", f.name));
        s.max = float(&format!("{}__max", f.name));
        s.mean = float(&format!("{}__mean", f.name));
        s.out_of_range = int(&format!("{}__oor", f.name));
        s.not_allowed = int(&format!("{}__na", f.name));
        if let Some((_, p)) = drift.iter().find(|(d, _)| d.name == f.name) {
            s.bins = read_bins(&int, &f.name, p, s.nulls, out.rows.saturating_sub(s.nulls));
        }
        out.features.insert(f.name.clone(), s);
    }
    out
}

/// Sample rows where a rule found offending rows: the first by key and time.
async fn add_samples(
    req: &StatsRequest,
    df: &DataFrame,
    predicate: &Expr,
    offending: Offending,
    out: &mut WindowStats,
    context: &str,
) -> CoreResult<()> {
    let source = &req.source;
    let mut shown: Vec<Expr> = req.join_keys.iter().map(|k| ident(source.source_column(&k.name))).collect();
    shown.push(ident(&source.timestamp_field));
    for (feature, rule, condition) in offending {
        let stats = out.features.get(&feature).expect("inserted above");
        let found = match rule {
            "ranges" => stats.out_of_range,
            "allowed_values" => stats.not_allowed,
            _ => stats.nulls,
        };
        if found == 0 {
            continue;
        }
        let mut columns = shown.clone();
        let column = ident(source.source_column(&feature));
        if !columns.contains(&column) {
            columns.push(column);
        }
        // The first rows by key and time (a top-k, not a full sort), so
        // the same data always shows the same samples.
        let order: Vec<datafusion::logical_expr::SortExpr> = shown.iter().map(|c| c.clone().sort(true, true)).collect();
        let rows = df
            .clone()
            .filter(predicate.clone().and(condition))
            .and_then(|d| d.select(columns))
            .and_then(|d| d.sort(order))
            .and_then(|d| d.limit(0, Some(req.samples)))
            .map_err(|e| df_error(context, e))?
            .collect()
            .await
            .map_err(|e| df_error(context, e))?;
        let samples = rows_as_json(&rows);
        out.features.get_mut(&feature).expect("inserted above").samples.insert(rule.to_owned(), samples);
    }
    Ok(())
}

/// Aggregates counting a feature's non-null values per reference bin
/// (`{feature}__bin{i}`); nulls and "other values" are derived by [`read_bins`].
fn bin_counts(name: &str, column: Expr, p: &FeatureProfile) -> Vec<Expr> {
    if let Some(h) = &p.histogram {
        let x = cast(column, DataType::Float64);
        (0..=h.cuts.len())
            .map(|i| {
                let condition = match (i.checked_sub(1).map(|j| h.cuts[j]), h.cuts.get(i)) {
                    (None, Some(hi)) => x.clone().lt(lit(*hi)),
                    (Some(lo), Some(hi)) => x.clone().gt_eq(lit(lo)).and(x.clone().lt(lit(*hi))),
                    (Some(lo), None) => x.clone().gt_eq(lit(lo)),
                    (None, None) => x.clone().is_not_null(),
                };
                one_if(condition).alias(format!("{name}__bin{i}"))
            })
            .collect()
    } else {
        let text = cast(column, DataType::Utf8);
        p.top_values
            .iter()
            .enumerate()
            .map(|(i, (v, _))| one_if(text.clone().eq(lit(v.clone()))).alias(format!("{name}__bin{i}")))
            .collect()
    }
}

/// Window counts in the order of `FeatureProfile::reference_bins`: value bins, then nulls.
fn read_bins(int: &dyn Fn(&str) -> u64, name: &str, p: &FeatureProfile, nulls: u64, non_null: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if let Some(h) = &p.histogram {
        out.extend((0..=h.cuts.len()).map(|i| int(&format!("{name}__bin{i}"))));
    } else {
        out.extend((0..p.top_values.len()).map(|i| int(&format!("{name}__bin{i}"))));
        let top: u64 = out.iter().sum();
        out.push(non_null.saturating_sub(top));
    }
    out.push(nulls);
    out
}

/// `p01`, `p05`, `p50`, `p99`: two digits so the keys sort in order.
fn quantile_name(q: f64) -> String {
    format!("p{:02.0}", q * 100.0)
}

/// A reference profile: one aggregate pass (counts, moments, approximate
/// quantiles), one more counting each numeric feature's decile bins, and a
/// grouped count per string or bool feature for its top values.
pub(crate) async fn profile(engine: Engine, req: StatsRequest, resolved: &ResolvedSource) -> CoreResult<Profile> {
    // One partition: the t-digest quantiles then see rows in file order, so
    // the same data gives the same profile.
    let ctx = session(engine.memory_limit, 1)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("profiling feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source_in(&ctx, resolved, Some(window_of(req.start, Some(req.end)))).await?;
    let schema = df.schema().as_arrow().clone();
    let predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let window = df.filter(predicate).map_err(|e| df_error(&context, e))?;

    let mut quantiles: Vec<f64> = PROFILE_QUANTILES.iter().chain(DECILES.iter()).copied().collect();
    quantiles.sort_by(f64::total_cmp);
    quantiles.dedup();
    let mut aggregates = vec![count(lit(1i64)).alias(ROWS)];
    for f in &view.schema {
        let c = ident(source.source_column(&f.name));
        aggregates.push(one_if(c.clone().is_null()).alias(format!("{}__nulls", f.name)));
        if binning(&f.dtype).is_numeric() {
            let x = cast(c, DataType::Float64);
            aggregates.push(min(x.clone()).alias(format!("{}__min", f.name)));
            aggregates.push(max(x.clone()).alias(format!("{}__max", f.name)));
            aggregates.push(avg(x.clone()).alias(format!("{}__mean", f.name)));
            aggregates.push(stddev_pop(x.clone()).alias(format!("{}__std", f.name)));
            for q in &quantiles {
                aggregates.push(approx_percentile_cont(x.clone().sort(true, false), lit(*q), None).alias(format!(
                    "{}__{}",
                    f.name,
                    quantile_name(*q)
                )));
            }
        }
    }
    let batch = one_row(window.clone().aggregate(vec![], aggregates), &context).await?;
    let int = |name: &str| int_of(&batch, name);
    // A profile keeps finite figures only: they become drift cuts and JSON.
    let float = |name: &str| float_of(&batch, name).filter(|v| v.is_finite());
    let rows = int(ROWS);
    let mut profile = Profile::new(view.name.clone(), req.start, req.end, rows);
    let mut bins = Vec::new();
    for f in &view.schema {
        let mut p = FeatureProfile::default();
        p.dtype = f.dtype.to_string();
        p.nulls = int(&format!("{}__nulls", f.name));
        p.count = rows.saturating_sub(p.nulls);
        p.null_fraction = if rows == 0 { 0.0 } else { p.nulls as f64 / rows as f64 };
        if binning(&f.dtype).is_numeric() {
            p.min = float(&format!("{}__min", f.name));
            p.max = float(&format!("{}__max", f.name));
            p.mean = float(&format!("{}__mean", f.name));
            p.std = float(&format!("{}__std", f.name));
            for q in PROFILE_QUANTILES {
                if let Some(v) = float(&format!("{}__{}", f.name, quantile_name(q))) {
                    p.quantiles.insert(quantile_name(q), v);
                }
            }
            let integer =
                matches!(f.dtype, feature_store_core::ValueType::Int32 | feature_store_core::ValueType::Int64);
            let mut cuts: Vec<f64> = DECILES
                .iter()
                .filter_map(|q| float(&format!("{}__{}", f.name, quantile_name(*q))))
                .map(|c| if integer { c.ceil() } else { c })
                .collect();
            // Bounds of the reference range: values beyond it get bins of their own.
            cuts.extend(p.min);
            cuts.extend(p.max.map(f64::next_up));
            p.histogram = Some(Histogram::with_cuts(cuts));
            bins.extend(bin_counts(&f.name, ident(source.source_column(&f.name)), &p));
        }
        profile.features.insert(f.name.clone(), p);
    }
    if !bins.is_empty() {
        let batch = one_row(window.clone().aggregate(vec![], bins), &context).await?;
        for (name, p) in profile.features.iter_mut() {
            if let Some(h) = p.histogram.as_mut() {
                for (i, n) in h.counts.iter_mut().enumerate() {
                    *n = int_of(&batch, &format!("{name}__bin{i}"));
                }
            }
        }
    }
    for f in &view.schema {
        if !binning(&f.dtype).is_categorical() {
            continue;
        }
        let c = ident(source.source_column(&f.name));
        let top = window
            .clone()
            .filter(c.clone().is_not_null())
            .and_then(|d| d.aggregate(vec![cast(c, DataType::Utf8).alias("v")], vec![count(lit(1i64)).alias("n")]))
            .and_then(|d| d.sort(vec![ident("n").sort(false, false), ident("v").sort(true, false)]))
            .and_then(|d| d.limit(0, Some(TOP_VALUES)))
            .map_err(|e| df_error(&context, e))?
            .collect()
            .await
            .map_err(|e| df_error(&context, e))?;
        let p = profile.features.get_mut(&f.name).expect("inserted above");
        for b in &top {
            let v = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
                .map_err(|e| df_error(&context, e.into()))?;
            let n = datafusion::arrow::compute::cast(b.column(1), &DataType::Int64)
                .map_err(|e| df_error(&context, e.into()))?;
            let (v, n) = (v.as_string::<i32>(), n.as_primitive::<Int64Type>());
            for i in 0..b.num_rows() {
                p.top_values.push((v.value(i).to_owned(), n.value(i).max(0) as u64));
            }
        }
        let top_sum: u64 = p.top_values.iter().map(|(_, n)| n).sum();
        p.other_count = p.count.saturating_sub(top_sum);
    }
    Ok(profile)
}

async fn one_row(
    df: datafusion::error::Result<datafusion::dataframe::DataFrame>,
    context: &str,
) -> CoreResult<RecordBatch> {
    let batches = df.map_err(|e| df_error(context, e))?.collect().await.map_err(|e| df_error(context, e))?;
    batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| CoreError::data(context, "the statistics query returned no row"))
}

fn int_of(batch: &RecordBatch, name: &str) -> u64 {
    batch
        .column_by_name(name)
        .and_then(|a| {
            let a = datafusion::arrow::compute::cast(a, &DataType::Int64).ok()?;
            let a = a.as_primitive::<Int64Type>();
            (!a.is_null(0)).then(|| a.value(0).max(0) as u64)
        })
        .unwrap_or(0)
}

fn float_of(batch: &RecordBatch, name: &str) -> Option<f64> {
    let a = batch.column_by_name(name)?;
    let a = datafusion::arrow::compute::cast(a, &DataType::Float64).ok()?;
    let a = a.as_primitive::<Float64Type>();
    (!a.is_null(0)).then(|| a.value(0))
}

fn rows_as_json(batches: &[RecordBatch]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for r in 0..b.num_rows() {
            let mut row = serde_json::Map::new();
            for (i, field) in schema.fields().iter().enumerate() {
                let v = feature_store_core::online::FeatureValue::from_array(b.column(i).as_ref(), r);
                row.insert(field.name().clone(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null));
            }
            out.push(serde_json::Value::Object(row));
        }
    }
    out
}
