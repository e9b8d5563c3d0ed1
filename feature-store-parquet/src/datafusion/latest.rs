//! The newest row per entity key in a time window, for materialization:
//! the window's rows sorted by key, then event time, created time and
//! feature values descending (DataFusion's external sort, which spills under
//! the memory limit), then the first row of each key run kept by a streaming
//! pass that compares adjacent keys in Arrow's row format. Memory stays
//! bounded whatever the row count. (A `ROW_NUMBER() OVER (PARTITION BY key)`
//! window was measured 2-3x slower: it keeps state per partition, i.e. per key.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast, ident, lit};
use datafusion::physical_plan::execute_stream;
use feature_store_core::historical::BatchStream;
use feature_store_core::offline::{EVENT_CREATED_TS, EventsRequest, LATEST_EVENT_TS, LatestRequest, LatestRows};
use feature_store_core::{Error as CoreError, Result as CoreResult, UTC, ValueType};
use futures::StreamExt;

use super::historical::{Engine, TimestampLike, key_type, read_source_in, source_timestamp, window_of};
use super::{df_error, session};
use crate::files::ResolvedSource;

const CREATED: &str = "__created_ts";

/// Memory for the per-key sort when no limit is configured: beyond it the
/// sort spills, so materializing any number of rows stays bounded.
pub const DEFAULT_MATERIALIZE_MEMORY: usize = 1 << 30;

pub(crate) async fn latest_rows(
    engine: Engine,
    req: LatestRequest,
    resolved: &ResolvedSource,
) -> CoreResult<LatestRows> {
    let ctx = session(Some(engine.memory_limit.unwrap_or(DEFAULT_MATERIALIZE_MEMORY)), engine.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source_in(&ctx, resolved, Some(window_of(req.start, Some(req.end)))).await?;
    let schema = df.schema().as_arrow().clone();
    let mut predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let ts = ident(&source.timestamp_field);
    let mut select: Vec<Expr> = Vec::new();
    let mut order: Vec<datafusion::logical_expr::SortExpr> = Vec::new();
    for (key, src, column) in key_columns(&schema, source, &req.join_keys, &context)? {
        predicate = predicate.and(ident(src).is_not_null());
        select.push(column);
        order.push(ident(&key.name).sort(true, true));
    }
    select.push(cast(ts, DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))).alias(LATEST_EVENT_TS));
    order.push(ident(LATEST_EVENT_TS).sort(false, false));
    if let Some(c) = &source.created_timestamp_field {
        select.push(ident(c).alias(CREATED));
        order.push(ident(CREATED).sort(false, false));
    }
    for f in &view.schema {
        let src = source.source_column(&f.name);
        if schema.field_with_name(src).is_err() {
            return Err(CoreError::data(&context, format!("feature column \"{src}\" is missing")));
        }
        select.push(cast(ident(src), f.dtype.to_arrow()).alias(&f.name));
    }
    // Sorted by key and newest first only: exact ties (same key, event and
    // created time) are resolved by [`LatestPerKey`] on the features, so the
    // sort's rows (and its merge's memory) carry three columns, not every feature.
    let df = df
        .filter(predicate)
        .and_then(|df| df.select(select))
        .and_then(|df| df.sort(order))
        .map_err(|e| df_error(&context, e))?;
    let plan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let sorted_schema = plan.schema();
    let stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    let rows_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows_read);
    let tie_features: Vec<bool> = view.schema.iter().map(|f| !f.dtype.is_list()).collect();
    let latest =
        LatestPerKey::new(&sorted_schema, req.join_keys.len(), source.created_timestamp_field.is_some(), &tie_features)
            .map_err(|e| CoreError::data(&context, e.to_string()))?;
    let out_schema = latest.out_schema();
    // The last key's row is held until the stream ends, then emitted.
    let state = Some((stream, latest, counter, context));
    let stream = futures::stream::unfold(state, |state| async move {
        let (mut stream, mut latest, counter, context) = state?;
        loop {
            let out = match stream.next().await {
                Some(Ok(batch)) => {
                    counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    match latest.push(&batch) {
                        Ok(out) if out.num_rows() == 0 => continue,
                        Ok(out) => out,
                        Err(e) => return Some((Err(CoreError::data(&context, e.to_string())), None)),
                    }
                }
                Some(Err(e)) => return Some((Err(df_error(&context, e)), None)),
                None => {
                    return match latest.finish() {
                        Ok(Some(out)) => Some((Ok(out), None)),
                        Ok(None) => None,
                        Err(e) => Some((Err(CoreError::data(&context, e.to_string())), None)),
                    };
                }
            };
            return Some((Ok(out), Some((stream, latest, counter, context))));
        }
    });
    Ok(LatestRows::new(BatchStream::new(out_schema, Box::pin(stream)), rows_read))
}

/// Each join key with its source column and that column cast to the key's
/// canonical type, named by the key.
fn key_columns<'a>(
    schema: &datafusion::arrow::datatypes::Schema,
    source: &'a feature_store_core::model::DataSource,
    keys: &'a [feature_store_core::model::JoinKey],
    context: &str,
) -> CoreResult<Vec<(&'a feature_store_core::model::JoinKey, &'a str, Expr)>> {
    keys.iter()
        .map(|key| {
            let src = source.source_column(&key.name);
            let src_type = schema
                .field_with_name(src)
                .map(|f| f.data_type().clone())
                .map_err(|_| CoreError::data(context, format!("join key column \"{src}\" is missing")))?;
            let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(&src_type)).ok_or_else(|| {
                CoreError::data(context, format!("join key \"{}\" has unsupported type {src_type}", key.name))
            })?;
            Ok((key, src, cast(ident(src), key_type(&declared)).alias(&key.name)))
        })
        .collect()
}

/// Every event of an aggregation view in `[start, end]` with non-null keys,
/// for materializing its tiles (see [`feature_store_core::offline::EventsRequest`]).
pub(crate) async fn events(engine: Engine, req: EventsRequest, resolved: &ResolvedSource) -> CoreResult<LatestRows> {
    let ctx = session(Some(engine.memory_limit.unwrap_or(DEFAULT_MATERIALIZE_MEMORY)), engine.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source_in(&ctx, resolved, Some(window_of(req.start, Some(req.end)))).await?;
    let schema = df.schema().as_arrow().clone();
    let mut predicate = window_predicate(&schema, source, req.start, req.end, &context)?;
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()));
    let mut select: Vec<Expr> = Vec::new();
    for (_, src, column) in key_columns(&schema, source, &req.join_keys, &context)? {
        predicate = predicate.and(ident(src).is_not_null());
        select.push(column);
    }
    select.push(cast(ident(&source.timestamp_field), micros.clone()).alias(LATEST_EVENT_TS));
    if let Some(c) = &source.created_timestamp_field {
        select.push(cast(ident(c), micros.clone()).alias(EVENT_CREATED_TS));
    }
    for c in req.columns() {
        let src = source.source_column(c);
        let found = schema
            .field_with_name(src)
            .map_err(|_| CoreError::data(&context, format!("column \"{src}\" of the aggregations is missing")))?;
        let t = ValueType::from_arrow(found.data_type()).ok_or_else(|| {
            CoreError::data(&context, format!("column \"{src}\" has unsupported type {}", found.data_type()))
        })?;
        select.push(cast(ident(src), t.to_arrow()).alias(c));
    }
    let df = df.filter(predicate).and_then(|df| df.select(select)).map_err(|e| df_error(&context, e))?;
    let plan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let out_schema = plan.schema();
    let stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    let rows_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows_read);
    let stream = stream.map(move |batch| {
        let batch = batch.map_err(|e| df_error(&context, e))?;
        counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        Ok(batch)
    });
    Ok(LatestRows::new(BatchStream::new(out_schema, Box::pin(stream)), rows_read))
}

/// `start <= event time <= end` in the source column's own unit and zone
/// (bounds rounded inward), so Parquet statistics can prune row groups.
pub(crate) fn window_predicate(
    schema: &datafusion::arrow::datatypes::Schema,
    source: &feature_store_core::model::DataSource,
    start: Option<chrono::DateTime<chrono::Utc>>,
    end: chrono::DateTime<chrono::Utc>,
    context: &str,
) -> CoreResult<Expr> {
    let (unit, tz) = &source_timestamp(schema, source, context)?;
    let per_unit = match unit {
        TimeUnit::Second => 1_000_000i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1,
        TimeUnit::Nanosecond => 0,
    };
    let bound = |us: i64, up: bool| -> ScalarValue {
        let v = if per_unit == 0 {
            us.saturating_mul(1000)
        } else if up {
            us.div_euclid(per_unit) + i64::from(us.rem_euclid(per_unit) != 0)
        } else {
            us.div_euclid(per_unit)
        };
        ScalarValue::new_timestamp_like(*unit, tz.clone(), v)
    };
    let ts = ident(&source.timestamp_field);
    let mut predicate = ts.clone().lt_eq(lit(bound(end.timestamp_micros(), false)));
    if let Some(start) = start {
        predicate = predicate.and(ts.gt_eq(lit(bound(start.timestamp_micros(), true))));
    }
    Ok(predicate)
}

/// The newest row of each key from batches sorted by key, then event and
/// created time newest first, carrying the current key across batches.
/// Exact ties (same key, event and created time) go to the row whose
/// features sort first descending, nulls last, list features left out: the
/// rule the as-of join applies, so materialized rows equal retrieved ones.
struct LatestPerKey {
    key_count: usize,
    /// Position of the created time, which the output leaves out.
    created: Option<usize>,
    keys: Option<RowConverter>,
    times: RowConverter,
    /// Feature columns ties compare, and their converter (descending, nulls last).
    tie_columns: Vec<usize>,
    ties: Option<RowConverter>,
    out_schema: SchemaRef,
    /// The best row so far of the current key, held until the key ends.
    pending: Option<Pending>,
}

struct Pending {
    row: RecordBatch,
    key: Option<OwnedRow>,
    time: OwnedRow,
}

type ArrowResult<T> = Result<T, datafusion::arrow::error::ArrowError>;

impl LatestPerKey {
    /// `schema`: keys, event time, created time (when `has_created`), features.
    fn new(schema: &SchemaRef, key_count: usize, has_created: bool, tie_features: &[bool]) -> ArrowResult<Self> {
        let field = |i: usize| schema.field(i).data_type().clone();
        let keys = (key_count > 0)
            .then(|| RowConverter::new((0..key_count).map(|i| SortField::new(field(i))).collect()))
            .transpose()?;
        let time_columns = 1 + usize::from(has_created);
        let times =
            RowConverter::new((key_count..key_count + time_columns).map(|i| SortField::new(field(i))).collect())?;
        let first_feature = key_count + time_columns;
        let tie_columns: Vec<usize> =
            tie_features.iter().enumerate().filter(|(_, t)| **t).map(|(i, _)| first_feature + i).collect();
        let desc = datafusion::arrow::compute::SortOptions { descending: true, nulls_first: false };
        let ties = (!tie_columns.is_empty())
            .then(|| {
                RowConverter::new(tie_columns.iter().map(|i| SortField::new_with_options(field(*i), desc)).collect())
            })
            .transpose()?;
        let created = has_created.then_some(key_count + 1);
        let fields =
            schema.fields().iter().enumerate().filter(|(i, _)| Some(*i) != created).map(|(_, f)| Arc::clone(f));
        let out_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields.collect::<Vec<_>>()));
        Ok(Self { key_count, created, keys, times, tie_columns, ties, out_schema, pending: None })
    }

    fn out_schema(&self) -> SchemaRef {
        Arc::clone(&self.out_schema)
    }

    /// Whether row `b` (one row) wins a tie against row `a`.
    fn wins(&self, a: &RecordBatch, b: &RecordBatch) -> ArrowResult<bool> {
        let Some(ties) = &self.ties else { return Ok(false) };
        let rows = |x: &RecordBatch| {
            ties.convert_columns(&self.tie_columns.iter().map(|i| Arc::clone(x.column(*i))).collect::<Vec<_>>())
        };
        let (ra, rb) = (rows(a)?, rows(b)?);
        Ok(rb.row(0) < ra.row(0))
    }

    /// The rows of keys that ended in `batch` (or before it).
    fn push(&mut self, batch: &RecordBatch) -> ArrowResult<RecordBatch> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.out_schema)));
        }
        let keys = self.keys.as_ref().map(|c| c.convert_columns(&batch.columns()[..self.key_count])).transpose()?;
        let time_columns = 1 + usize::from(self.created.is_some());
        let times = self.times.convert_columns(&batch.columns()[self.key_count..self.key_count + time_columns])?;
        let mut carried: Option<RecordBatch> = None;
        let mut selected: Vec<u32> = Vec::new();
        // The current key's best row: held over from an earlier batch, or a row of this one.
        let mut here: Option<usize> = None;
        for i in 0..n {
            let same_key = match (&keys, here, &self.pending) {
                (None, Some(_), _) | (None, None, Some(_)) => true,
                (Some(k), Some(j), _) => k.row(j) == k.row(i),
                (Some(k), None, Some(p)) => p.key.as_ref().is_some_and(|key| key.row() == k.row(i)),
                (_, None, None) => false,
            };
            if !same_key {
                if let Some(j) = here {
                    selected.push(j as u32);
                } else if let Some(p) = self.pending.take() {
                    carried = Some(p.row);
                }
                here = Some(i);
                continue;
            }
            // Same key: only an exact tie with the best row can replace it.
            let best = match here {
                Some(j) => (times.row(j) == times.row(i)).then(|| batch.slice(j, 1)),
                None => self.pending.as_ref().filter(|p| p.time.row() == times.row(i)).map(|p| p.row.clone()),
            };
            if let Some(best) = best
                && self.wins(&best, &batch.slice(i, 1))?
            {
                if here.is_none() {
                    self.pending = None;
                }
                here = Some(i);
            }
        }
        if let Some(j) = here {
            self.pending = Some(Pending {
                row: batch.slice(j, 1),
                key: keys.as_ref().map(|k| k.row(j).owned()),
                time: times.row(j).owned(),
            });
        }
        let picked = take_record_batch(batch, &UInt32Array::from(selected))?;
        let out = match carried {
            Some(c) => concat_batches(&batch.schema(), &[c, picked])?,
            None => picked,
        };
        self.project(out)
    }

    /// The last key's row, once the input has ended.
    fn finish(&mut self) -> ArrowResult<Option<RecordBatch>> {
        self.pending.take().map(|p| self.project(p.row)).transpose()
    }

    fn project(&self, batch: RecordBatch) -> ArrowResult<RecordBatch> {
        let columns =
            (0..batch.num_columns()).filter(|i| Some(*i) != self.created).map(|i| Arc::clone(batch.column(i)));
        RecordBatch::try_new(Arc::clone(&self.out_schema), columns.collect())
    }
}
