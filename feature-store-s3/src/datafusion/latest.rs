//! The newest row per entity key in a time window, for materialization:
//! `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY event DESC, created DESC,
//! features DESC) = 1`. DataFusion sorts per partition and spills under the
//! memory limit, so memory stays bounded whatever the row count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast, col, ident, lit};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use feature_store_core::historical::BatchStream;
use feature_store_core::offline::{LATEST_EVENT_TS, LatestRequest, LatestRows};
use feature_store_core::{Error as CoreError, Result as CoreResult, UTC, ValueType};
use futures::{StreamExt, TryStreamExt};

use super::historical::{TimestampLike, key_type, read_source};
use super::{df_error, session};
use crate::ParquetOfflineStore;

const CREATED: &str = "__created_ts";
const ROW: &str = "__row";

/// Memory for the per-key sort when no limit is configured: beyond it the
/// sort spills, so materializing any number of rows stays bounded.
pub const DEFAULT_MATERIALIZE_MEMORY: usize = 1 << 30;

pub(crate) async fn latest_rows(store: &ParquetOfflineStore, req: LatestRequest) -> CoreResult<LatestRows> {
    let ctx = session(Some(store.memory_limit.unwrap_or(DEFAULT_MATERIALIZE_MEMORY)), store.target_partitions)?;
    let source = &req.source;
    let view = &req.view;
    let context = format!("feature view \"{}\" (source \"{}\", {})", view.name, source.name, source.path);
    let df = read_source(store, &ctx, source).await?;
    let schema = df.schema().as_arrow().clone();
    let ts_type = schema.field_with_name(&source.timestamp_field).map(|f| f.data_type().clone()).map_err(|_| {
        CoreError::data(&context, format!("timestamp column \"{}\" is missing", source.timestamp_field))
    })?;
    let DataType::Timestamp(unit, tz) = &ts_type else {
        return Err(CoreError::data(
            &context,
            format!("timestamp column \"{}\" is {ts_type}, not a timestamp", source.timestamp_field),
        ));
    };
    // Inclusive bounds in the column's unit: round the start up and the end down.
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
    let mut predicate = ts.clone().lt_eq(lit(bound(req.end.timestamp_micros(), false)));
    if let Some(start) = req.start {
        predicate = predicate.and(ts.clone().gt_eq(lit(bound(start.timestamp_micros(), true))));
    }
    let mut select: Vec<Expr> = Vec::new();
    let mut keys: Vec<Expr> = Vec::new();
    for key in &req.join_keys {
        let src = source.source_column(&key.name);
        let src_type = schema
            .field_with_name(src)
            .map(|f| f.data_type().clone())
            .map_err(|_| CoreError::data(&context, format!("join key column \"{src}\" is missing")))?;
        let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(&src_type)).ok_or_else(|| {
            CoreError::data(&context, format!("join key \"{}\" has unsupported type {src_type}", key.name))
        })?;
        predicate = predicate.and(ident(src).is_not_null());
        select.push(cast(ident(src), key_type(&declared)).alias(&key.name));
        keys.push(ident(&key.name));
    }
    select.push(cast(ts, DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))).alias(LATEST_EVENT_TS));
    let mut order = vec![ident(LATEST_EVENT_TS).sort(false, false)];
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
    let rank = row_number().partition_by(keys).order_by(order).build().map_err(|e| df_error(&context, e))?;
    let mut out: Vec<Expr> = req.join_keys.iter().map(|k| ident(&k.name)).collect();
    out.push(ident(LATEST_EVENT_TS));
    out.extend(view.schema.iter().map(|f| ident(&f.name)));
    let df = df
        .filter(predicate)
        .and_then(|df| df.select(select))
        .and_then(|df| df.window(vec![rank.alias(ROW)]))
        .and_then(|df| df.filter(col(ROW).eq(lit(1u64))))
        .and_then(|df| df.select(out))
        .map_err(|e| df_error(&context, e))?;
    let plan = df.create_physical_plan().await.map_err(|e| df_error(&context, e))?;
    let out_schema = plan.schema();
    let stream = execute_stream(Arc::clone(&plan), ctx.task_ctx()).map_err(|e| df_error(&context, e))?;
    let rows_read = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&rows_read);
    // Once the rows are out, the window operator's input count is the number of rows read.
    let tail = futures::stream::once(async move {
        counter.store(window_input_rows(plan.as_ref()), Ordering::Relaxed);
    })
    .filter_map(|()| async { None });
    let stream = stream.map_err(move |e| df_error(&context, e)).chain(tail);
    Ok(LatestRows::new(BatchStream::new(out_schema, Box::pin(stream)), rows_read))
}

fn window_input_rows(plan: &dyn ExecutionPlan) -> u64 {
    if plan.name().contains("WindowAgg") {
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    }
    plan.children().iter().map(|c| window_input_rows(c.as_ref())).sum()
}
