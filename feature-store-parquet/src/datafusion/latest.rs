//! The newest row per entity key in a time window, for materialization:
//! the window's rows sorted by key, then event time, created time and
//! feature values descending (DataFusion's external sort, which spills under
//! the memory limit), then the first row of each key run kept by a streaming
//! pass that compares adjacent keys in Arrow's row format. Memory stays
//! bounded whatever the row count. (A `ROW_NUMBER() OVER (PARTITION BY key)`
//! window was measured 2-3x slower: it keeps state per partition, i.e. per key.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, cast, ident, lit};
use datafusion::physical_plan::execute_stream;
use feature_store_core::historical::BatchStream;
use feature_store_core::offline::{EVENT_CREATED_TS, EventsRequest, LATEST_EVENT_TS, LatestRequest, LatestRows};
use feature_store_core::{Error as CoreError, Result as CoreResult, UTC, ValueType};
use futures::{StreamExt, TryStreamExt};

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
        if !f.dtype.is_list() {
            order.push(ident(&f.name).sort(false, false));
        }
    }
    let mut out: Vec<Expr> = req.join_keys.iter().map(|k| ident(&k.name)).collect();
    out.push(ident(LATEST_EVENT_TS));
    out.extend(view.schema.iter().map(|f| ident(&f.name)));
    let df = df
        .filter(predicate)
        .and_then(|df| df.select(select))
        .and_then(|df| df.sort(order))
        .and_then(|df| df.select(out))
        .map_err(|e| df_error(&context, e))?;
    let plan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let out_schema = plan.schema();
    let stream = execute_stream(plan, ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    let rows_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows_read);
    let key_count = req.join_keys.len();
    let fields = out_schema.fields().iter().take(key_count).map(|f| SortField::new(f.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(|e| CoreError::data(&context, e.to_string()))?;
    let mut first = FirstPerKey { converter, key_count, last: None, seen_any: false };
    let stream = stream.map(move |batch| {
        let batch = batch.map_err(|e| df_error(&context, e))?;
        counter.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        first.keep(&batch).map_err(|e| CoreError::data(&context, e.to_string()))
    });
    let stream = stream.try_filter(|b| futures::future::ready(b.num_rows() > 0));
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

/// Keeps the first row of each run of equal keys in key-sorted batches,
/// carrying the last key across batches.
struct FirstPerKey {
    converter: RowConverter,
    key_count: usize,
    last: Option<OwnedRow>,
    /// For views without keys: whether the single row was emitted.
    seen_any: bool,
}

impl FirstPerKey {
    fn keep(&mut self, batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(batch.clone());
        }
        if self.key_count == 0 {
            let mask: BooleanArray = (0..n).map(|i| Some(i == 0 && !self.seen_any)).collect();
            self.seen_any = true;
            return filter_record_batch(batch, &mask);
        }
        let rows = self.converter.convert_columns(&batch.columns()[..self.key_count])?;
        let mut mask = Vec::with_capacity(n);
        for i in 0..n {
            let row = rows.row(i);
            let new = match (i, &self.last) {
                (0, Some(last)) => last.row() != row,
                (0, None) => true,
                _ => rows.row(i - 1) != row,
            };
            mask.push(new);
        }
        self.last = Some(rows.row(n - 1).owned());
        filter_record_batch(batch, &BooleanArray::from(mask))
    }
}
