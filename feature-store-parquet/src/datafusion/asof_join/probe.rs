//! The probe: each entity row finds its key's group and binary-searches it
//! for the last event time at or before its own (within the ttl).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Builder};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use feature_store_core::aggregation::{Output, outputs_to_array};

use super::AsOfSpec;
use super::build::{BuildSide, KeyIndex, PREFETCH_AHEAD, any_null, cast_keys};
use crate::datafusion::timestamps::scaled;

pub(super) fn probe(build: &BuildSide, spec: &AsOfSpec, left: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if !spec.aggregations.is_empty() {
        return aggregate(build, spec, left, schema);
    }
    let build = &build.data;
    let n = left.num_rows();
    let ts = scaled(left.column(spec.left_ts), spec.ts_unit)?;
    let mut idx = UInt32Builder::with_capacity(n);
    if build.ts.is_empty() {
        idx.append_nulls(n);
    } else {
        let key_columns: Vec<ArrayRef> = spec.left_keys.iter().map(|i| Arc::clone(left.column(*i))).collect();
        let keys = cast_keys(&key_columns, &spec.key_types)?;
        match &build.index {
            KeyIndex::Unkeyed => {
                for i in 0..n {
                    idx.append_option(ts.get(i).and_then(|t| build.find(build.ranges[0], t, spec.ttl)));
                }
            }
            KeyIndex::Int(map) => {
                let k = keys[0].as_primitive::<Int64Type>();
                // Two passes: independent hash lookups first, then the
                // searches, each prefetching the rows a few searches ahead,
                // so the CPU overlaps cache misses instead of chaining them.
                const NONE: u64 = u64::MAX;
                let ranges: Vec<u64> = (0..n)
                    .map(|i| if k.is_valid(i) { map.get(&k.value(i)).copied().unwrap_or(NONE) } else { NONE })
                    .collect();
                for (i, r) in ranges.iter().enumerate() {
                    if let Some(&ahead) = ranges.get(i + PREFETCH_AHEAD)
                        && ahead != NONE
                    {
                        build.prefetch(ahead);
                    }
                    let found = match ts.get(i) {
                        Some(t) if *r != NONE => build.find(*r, t, spec.ttl),
                        _ => None,
                    };
                    idx.append_option(found);
                }
            }
            KeyIndex::Rows { converter, map } => {
                let rows = converter.convert_columns(&keys)?;
                for i in 0..n {
                    let found = match ts.get(i) {
                        Some(t) if !any_null(&keys, i) => map
                            .get(rows.row(i).as_ref())
                            .and_then(|g| build.find(build.ranges[*g as usize], t, spec.ttl)),
                        _ => None,
                    };
                    idx.append_option(found);
                }
            }
        }
    }
    let indices = idx.finish();
    let mut columns = kept_left(&left, schema, build.features.len());
    for c in &build.features {
        columns.push(take(c.as_ref(), &indices, None)?);
    }
    with_rows(schema, columns, n)
}

/// An aggregation view: each entity row's key range, cut to its window, is
/// aggregated by each aggregation's range structure. A null key or time
/// gives nulls (counts included); a key without events an empty window.
fn aggregate(build: &BuildSide, spec: &AsOfSpec, left: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let build = &build.data;
    let n = left.num_rows();
    let ts = scaled(left.column(spec.left_ts), spec.ts_unit)?;
    let key_columns: Vec<ArrayRef> = spec.left_keys.iter().map(|i| Arc::clone(left.column(*i))).collect();
    let keys = cast_keys(&key_columns, &spec.key_types)?;
    // Each row's packed key range; `EMPTY` for a key without events, `None` for a null key.
    const EMPTY: u64 = 0;
    let ranges: Vec<Option<u64>> = match &build.index {
        KeyIndex::Unkeyed => (0..n).map(|_| Some(build.ranges.first().copied().unwrap_or(EMPTY))).collect(),
        KeyIndex::Int(map) => {
            let k = keys[0].as_primitive::<Int64Type>();
            (0..n).map(|i| k.is_valid(i).then(|| map.get(&k.value(i)).copied().unwrap_or(EMPTY))).collect()
        }
        KeyIndex::Rows { converter, map } => {
            let rows = converter.convert_columns(&keys)?;
            (0..n)
                .map(|i| {
                    (!any_null(&keys, i))
                        .then(|| map.get(rows.row(i).as_ref()).map_or(EMPTY, |g| build.ranges[*g as usize]))
                })
                .collect()
        }
    };
    // Each distinct window's event range per row, searched once for all
    // the aggregations over it.
    let mut windows: Vec<(i64, Option<i64>)> = Vec::new();
    for agg in &spec.aggregations {
        let w = (agg.window.window, agg.window.interval);
        if !windows.contains(&w) {
            windows.push(w);
        }
    }
    let spans: Vec<Vec<Option<(usize, usize)>>> = windows
        .iter()
        .map(|w| {
            let agg = spec.aggregations.iter().find(|a| (a.window.window, a.window.interval) == *w).expect("listed");
            (0..n)
                .map(|i| match (ranges[i], ts.get(i)) {
                    (Some(range), Some(t)) => {
                        let (lo, hi) = agg.window.bounds(t);
                        Some(build.window(range, lo, hi))
                    }
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut columns = kept_left(&left, schema, spec.aggregations.len());
    for (agg, index) in spec.aggregations.iter().zip(&build.aggregates) {
        let w = windows.iter().position(|w| *w == (agg.window.window, agg.window.interval)).expect("listed");
        let outputs = spans[w]
            .iter()
            .map(|span| match span {
                Some((a, b)) => index.query(*a, *b),
                None => Ok(Output::Null),
            })
            .collect::<feature_store_core::Result<Vec<Output>>>()
            .and_then(|o| outputs_to_array(&o, &agg.dtype))
            .map_err(|e| {
                let view = format!("feature view \"{}\"", spec.view);
                DataFusionError::External(Box::new(feature_store_core::Error::data(view, e.to_string())))
            })?;
        columns.push(outputs);
    }
    with_rows(schema, columns, n)
}

/// The entity columns, unless `schema` holds only the `features` (a
/// features-only join).
fn kept_left(left: &RecordBatch, schema: &SchemaRef, features: usize) -> Vec<ArrayRef> {
    if schema.fields().len() == features { Vec::new() } else { left.columns().to_vec() }
}

/// A batch of `rows` rows (which a batch without columns cannot infer).
fn with_rows(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?)
}
