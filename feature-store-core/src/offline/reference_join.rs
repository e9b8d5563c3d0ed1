//! The point-in-time join of [`super::MemoryOfflineStore`]: a plain, single
//! threaded implementation of the semantics in [`crate::historical`], kept
//! simple so that it can serve as the reference other stores are checked
//! against. Instants are compared exactly as i128 nanoseconds.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::historical::ViewRequest;
use crate::{Error, Result, ValueType, describe_arrow};

/// Exact instants of a timestamp column (naive = UTC); `None` for nulls.
pub(super) fn instants(a: &ArrayRef, what: &str) -> Result<Vec<Option<i128>>> {
    fn conv<T: arrow_array::ArrowPrimitiveType<Native = i64>>(a: &ArrayRef, mul: i128) -> Vec<Option<i128>> {
        a.as_primitive::<T>().iter().map(|v| v.map(|v| i128::from(v) * mul)).collect()
    }
    Ok(match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => conv::<TimestampSecondType>(a, 1_000_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => conv::<TimestampMillisecondType>(a, 1_000_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => conv::<TimestampMicrosecondType>(a, 1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => conv::<TimestampNanosecondType>(a, 1),
        other => {
            return Err(Error::data(what, format!("is {}, not a timestamp", describe_arrow(other))));
        }
    })
}

fn key_type(t: &ValueType) -> DataType {
    match t {
        ValueType::Int32 | ValueType::Int64 => DataType::Int64,
        other => other.to_arrow(),
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str, what: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let have: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
        Error::data(what, format!("missing column \"{name}\" (columns: {})", have.join(", ")))
    })
}

fn cast(a: &ArrayRef, to: &DataType, what: &str) -> Result<ArrayRef> {
    arrow_cast::cast(a, to).map_err(|e| Error::data(what, format!("cannot cast to {to}: {e}")))
}

/// Joins `views` onto `entities`; output = entity columns, then each view's features.
pub(super) fn join(
    entities: &RecordBatch,
    views: &[ViewRequest],
    timestamp_column: &str,
    source_rows: impl Fn(&ViewRequest) -> Result<RecordBatch>,
) -> Result<RecordBatch> {
    let entity_ts = instants(column(entities, timestamp_column, "entity table")?, "entity table timestamp column")?;
    let mut fields: Vec<Arc<Field>> = entities.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = entities.columns().to_vec();
    for v in views {
        if v.view.is_aggregation() {
            for (out, values) in v.output_names.iter().zip(aggregate_view(entities, &entity_ts, v, &source_rows(v)?)?) {
                fields.push(Arc::new(Field::new(out, values.data_type().clone(), true)));
                columns.push(values);
            }
            continue;
        }
        let (picked, features) = join_view(entities, &entity_ts, v, &source_rows(v)?)?;
        for ((out, f), values) in v.output_names.iter().zip(&v.features).zip(features) {
            let dtype = v.view.feature(f).map(|x| x.dtype.to_arrow()).unwrap_or_else(|| values.data_type().clone());
            let taken = arrow_select::take::take(values.as_ref(), &picked, None)
                .map_err(|e| Error::data(format!("feature view \"{}\"", v.view.name), e.to_string()))?;
            fields.push(Arc::new(Field::new(out, dtype, true)));
            columns.push(taken);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::data("historical retrieval", e.to_string()))
}

/// `cols` in Arrow's row format, for grouping and ordering; `None` for no columns.
fn rows_of(cols: &[ArrayRef], what: &str) -> Result<Option<arrow_row::Rows>> {
    if cols.is_empty() {
        return Ok(None);
    }
    let converter = RowConverter::new(cols.iter().map(|c| SortField::new(c.data_type().clone())).collect())
        .map_err(|e| Error::data(what, e.to_string()))?;
    converter.convert_columns(cols).map(Some).map_err(|e| Error::data(what, e.to_string()))
}

/// Whether row `i` is non-null in every one of `cols`.
fn all_valid(cols: &[ArrayRef], i: usize) -> bool {
    cols.iter().all(|c| c.is_valid(i))
}

/// The join keys of entity rows and source rows, cast to their canonical types.
fn key_columns(
    entities: &RecordBatch,
    v: &ViewRequest,
    rows: &RecordBatch,
    what: &str,
) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
    let name = &v.view.name;
    let src = &v.source;
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for key in &v.join_keys {
        let src_col = column(rows, src.source_column(&key.name), what)?;
        let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(src_col.data_type())).ok_or_else(|| {
            Error::data(what, format!("join key \"{}\" has unsupported type {}", key.name, src_col.data_type()))
        })?;
        let target = key_type(&declared);
        let ent_col = column(entities, &key.name, "entity table")?;
        if ValueType::from_arrow(ent_col.data_type()).as_ref().map(key_type) != Some(target.clone()) {
            return Err(Error::data(
                "entity table",
                format!(
                    "join key column \"{}\" is {} but feature view \"{name}\" joins on it as {declared}; cast the column",
                    key.name,
                    describe_arrow(ent_col.data_type())
                ),
            ));
        }
        left.push(cast(ent_col, &target, "entity table")?);
        right.push(cast(src_col, &target, what)?);
    }
    Ok((left, right))
}

/// For one view: the chosen source row per entity row, and the feature columns to take from.
fn join_view(
    entities: &RecordBatch,
    entity_ts: &[Option<i128>],
    v: &ViewRequest,
    rows: &RecordBatch,
) -> Result<(UInt32Array, Vec<ArrayRef>)> {
    let name = &v.view.name;
    let src = &v.source;
    let what = format!("feature view \"{name}\" (source \"{}\", {})", src.name, src.path);
    let (left, right) = key_columns(entities, v, rows, &what)?;
    let event = instants(column(rows, &src.timestamp_field, &what)?, &what)?;
    let created = match &src.created_timestamp_field {
        Some(c) => instants(column(rows, c, &what)?, &what)?,
        None => vec![None; rows.num_rows()],
    };
    let mut features = Vec::new();
    for f in &v.features {
        let field = v.view.feature(f).ok_or_else(|| Error::NotFound {
            kind: "feature",
            name: format!("{name}:{f}"),
            hint: None,
        })?;
        features.push(cast(column(rows, src.source_column(f), &what)?, &field.dtype.to_arrow(), &what)?);
    }

    // Group source rows by key; rows with a null key or time never match.
    let key_of = |cols: &[ArrayRef]| rows_of(cols, &what);
    let right_rows = key_of(&right)?;
    let mut groups: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
    for (i, t) in event.iter().enumerate() {
        if t.is_none() || !all_valid(&right, i) {
            continue;
        }
        let k = right_rows.as_ref().map(|r| r.row(i).as_ref().to_vec()).unwrap_or_default();
        groups.entry(k).or_default().push(i as u32);
    }
    // Order each group by (event, created with nulls lowest, feature values with nulls lowest).
    let tie = if features.is_empty() {
        None
    } else {
        let converter = RowConverter::new(features.iter().map(|c| SortField::new(c.data_type().clone())).collect())
            .map_err(|e| Error::data(&what, e.to_string()))?;
        Some(converter.convert_columns(&features).map_err(|e| Error::data(&what, e.to_string()))?)
    };
    for g in groups.values_mut() {
        g.sort_by(|a, b| {
            let (a, b) = (*a as usize, *b as usize);
            event[a]
                .cmp(&event[b])
                .then(created[a].cmp(&created[b]))
                .then_with(|| tie.as_ref().map_or(std::cmp::Ordering::Equal, |t| t.row(a).cmp(&t.row(b))))
        });
    }
    let ttl = v.view.ttl.map(|d| d.as_nanos() as i128);
    let left_rows = key_of(&left)?;
    let picked: UInt32Array = (0..entities.num_rows())
        .map(|i| {
            let t = entity_ts[i]?;
            if !all_valid(&left, i) {
                return None;
            }
            let k = left_rows.as_ref().map(|r| r.row(i).as_ref().to_vec()).unwrap_or_default();
            let g = groups.get(&k)?;
            let p = g.partition_point(|r| event[*r as usize].expect("filtered") <= t);
            let r = *g.get(p.checked_sub(1)?)?;
            match ttl {
                Some(ttl) if event[r as usize].expect("filtered") < t - ttl => None,
                _ => Some(r),
            }
        })
        .collect();
    Ok((picked, features))
}

/// For an aggregation view: each requested aggregate at each entity row,
/// by brute force over the key's events (see `crate::aggregation::reference`).
fn aggregate_view(
    entities: &RecordBatch,
    entity_ts: &[Option<i128>],
    v: &ViewRequest,
    rows: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    use crate::aggregation::{
        KeyEvents, Order, Output, ValueReader, WindowSpec, outputs_to_array, reference, sort_ties,
    };

    let name = &v.view.name;
    let src = &v.source;
    let what = format!("feature view \"{name}\" (source \"{}\", {})", src.name, src.path);
    let (left, right) = key_columns(entities, v, rows, &what)?;
    let nanos = |t: i128| i64::try_from(t).map_err(|_| Error::data(&what, format!("time {t} ns is out of range")));
    let event = instants(column(rows, &src.timestamp_field, &what)?, &what)?;
    let created = match &src.created_timestamp_field {
        Some(c) => instants(column(rows, c, &what)?, &what)?,
        None => vec![None; rows.num_rows()],
    };
    let key_rows = |cols: &[ArrayRef]| rows_of(cols, &what);
    let right_rows = key_rows(&right)?;
    let mut groups: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, t) in event.iter().enumerate() {
        if t.is_some() && all_valid(&right, i) {
            let k = right_rows.as_ref().map(|r| r.row(i).as_ref().to_vec()).unwrap_or_default();
            groups.entry(k).or_default().push(i);
        }
    }
    let order_of = |i: usize| -> Result<Order> {
        Ok(Order { time: nanos(event[i].expect("filtered"))?, created: created[i].map(nanos).transpose()? })
    };
    let left_rows = key_rows(&left)?;
    let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    for f in &v.features {
        let field = v.view.feature(f).ok_or_else(|| Error::NotFound {
            kind: "feature",
            name: format!("{name}:{f}"),
            hint: None,
        })?;
        let agg = v.view.aggregations.iter().find(|a| a.output_name() == *f).ok_or_else(|| {
            Error::data(&what, format!("feature \"{f}\" is not one of the view's aggregations; re-run apply"))
        })?;
        let (input, reader) = match &agg.column {
            None => (None, None),
            Some(c) => {
                let col = column(rows, src.source_column(c), &what)?;
                let t = ValueType::from_arrow(col.data_type()).ok_or_else(|| {
                    Error::data(
                        &what,
                        format!("column \"{c}\" has unsupported type {}", describe_arrow(col.data_type())),
                    )
                })?;
                let reader = ValueReader::new(cast(col, &t.to_arrow(), &what)?, &what)?;
                (Some(t), Some(reader))
            }
        };
        let spec = WindowSpec {
            function: agg.function,
            input: input.clone(),
            n: agg.n,
            window: ns(agg.window),
            interval: v.view.aggregation_interval.map(ns),
        };
        // Each key's events sorted by (order, value), built once per feature.
        type Events = (Vec<Order>, Vec<Option<crate::aggregation::Value>>);
        let mut keyed: HashMap<&[u8], Events> = HashMap::new();
        for (k, idx) in &groups {
            let mut items: Vec<(Order, Option<crate::aggregation::Value>)> = idx
                .iter()
                .map(|i| Ok((order_of(*i)?, reader.as_ref().and_then(|r| r.get(*i)))))
                .collect::<Result<_>>()?;
            items.sort_by_key(|a| a.0);
            let (orders, mut values): (Vec<Order>, Vec<_>) = items.into_iter().unzip();
            sort_ties(&orders, &mut values);
            keyed.insert(k.as_slice(), (orders, values));
        }
        let outputs: Vec<Output> = (0..entities.num_rows())
            .map(|i| {
                let Some(t) = entity_ts[i] else { return Ok(Output::Null) };
                if !all_valid(&left, i) {
                    return Ok(Output::Null);
                }
                let k = left_rows.as_ref().map(|r| r.row(i).as_ref().to_vec()).unwrap_or_default();
                let empty = (Vec::new(), Vec::new());
                let (orders, values) = keyed.get(k.as_slice()).unwrap_or(&empty);
                let values: &[Option<crate::aggregation::Value>] = if input.is_some() { values } else { &[] };
                reference::aggregate_at(&KeyEvents { orders, values }, &spec, nanos(t)?)
                    .map_err(|e| Error::data(&what, format!("aggregation \"{f}\": {e}")))
            })
            .collect::<Result<_>>()?;
        out.push(outputs_to_array(&outputs, &field.dtype)?);
    }
    Ok(out)
}

/// Every event of `req.view` in `[start, end]` with non-null keys, laid out
/// as [`super::TilesRequest`] says.
pub(super) fn events(req: &super::TilesRequest, rows: &RecordBatch) -> Result<(RecordBatch, u64)> {
    let src = &req.source;
    let what = format!("feature view \"{}\" (source \"{}\", {})", req.view.name, src.name, src.path);
    let event = instants(column(rows, &src.timestamp_field, &what)?, &what)?;
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(crate::UTC.into()));
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for key in &req.join_keys {
        let col = column(rows, src.source_column(&key.name), &what)?;
        let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(col.data_type())).ok_or_else(|| {
            Error::data(&what, format!("join key \"{}\" has unsupported type {}", key.name, col.data_type()))
        })?;
        let t = key_type(&declared);
        fields.push(Field::new(&key.name, t.clone(), true));
        columns.push(cast(col, &t, &what)?);
    }
    fields.push(Field::new(super::LATEST_EVENT_TS, ts.clone(), true));
    columns.push(cast(column(rows, &src.timestamp_field, &what)?, &ts, &what)?);
    if let Some(c) = &src.created_timestamp_field {
        fields.push(Field::new(super::EVENT_CREATED_TS, ts.clone(), true));
        columns.push(cast(column(rows, c, &what)?, &ts, &what)?);
    }
    for c in req.columns() {
        let col = column(rows, src.source_column(c), &what)?;
        let t = ValueType::from_arrow(col.data_type()).ok_or_else(|| {
            Error::data(&what, format!("column \"{c}\" has unsupported type {}", describe_arrow(col.data_type())))
        })?;
        fields.push(Field::new(c, t.to_arrow(), true));
        columns.push(cast(col, &t.to_arrow(), &what)?);
    }
    let (start, end) =
        (req.start.map(|t| i128::from(t.timestamp_micros()) * 1000), i128::from(req.end.timestamp_micros()) * 1000);
    let keep: arrow_array::BooleanArray = (0..rows.num_rows())
        .map(|i| {
            let in_window = event[i].is_some_and(|t| t <= end && start.is_none_or(|s| t >= s));
            Some(in_window && all_valid(&columns[..req.join_keys.len()], i))
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .and_then(|b| arrow_select::filter::filter_record_batch(&b, &keep))
        .map_err(|e| Error::data(&what, e.to_string()))?;
    let read = batch.num_rows() as u64;
    Ok((batch, read))
}

/// The newest row per key of `req.view` in `[start, end]`, as
/// [`super::LatestRows`] describes, from all of its source `rows`: the plain
/// reference for materialization reads. Rows are ordered by key.
pub(super) fn latest(req: &super::LatestRequest, rows: &RecordBatch) -> Result<(RecordBatch, u64)> {
    let src = &req.source;
    let what = format!("feature view \"{}\" (source \"{}\", {})", req.view.name, src.name, src.path);
    let event = instants(column(rows, &src.timestamp_field, &what)?, &what)?;
    let created = match &src.created_timestamp_field {
        Some(c) => instants(column(rows, c, &what)?, &what)?,
        None => vec![None; rows.num_rows()],
    };
    let mut keys = Vec::new();
    for key in &req.join_keys {
        let col = column(rows, src.source_column(&key.name), &what)?;
        let declared = key.dtype.clone().or_else(|| ValueType::from_arrow(col.data_type())).ok_or_else(|| {
            Error::data(&what, format!("join key \"{}\" has unsupported type {}", key.name, col.data_type()))
        })?;
        keys.push(cast(col, &key_type(&declared), &what)?);
    }
    let mut features = Vec::new();
    for f in &req.view.schema {
        features.push(cast(column(rows, src.source_column(&f.name), &what)?, &f.dtype.to_arrow(), &what)?);
    }
    let (start, end) =
        (req.start.map(|t| i128::from(t.timestamp_micros()) * 1000), i128::from(req.end.timestamp_micros()) * 1000);
    let in_window: Vec<usize> = (0..rows.num_rows())
        .filter(|&i| event[i].is_some_and(|t| t <= end && start.is_none_or(|s| t >= s)))
        .filter(|&i| all_valid(&keys, i))
        .collect();
    let rows_read = in_window.len() as u64;
    let convert = |cols: &[ArrayRef]| rows_of(cols, &what);
    let key_rows = convert(&keys)?;
    // Rows are ranked by their event time in microseconds, the unit of
    // `LATEST_EVENT_TS` (nanoseconds apart within one microsecond tie).
    let micros_of = |i: usize| event[i].map(|t| t / 1000);
    // List features do not take part in tie-breaking, as in retrieval's sort.
    let ranked: Vec<ArrayRef> =
        req.view.schema.iter().zip(&features).filter(|(f, _)| !f.dtype.is_list()).map(|(_, c)| Arc::clone(c)).collect();
    let tie = convert(&ranked)?;
    let mut best: std::collections::BTreeMap<Vec<u8>, usize> = std::collections::BTreeMap::new();
    for i in in_window {
        let k = key_rows.as_ref().map(|r| r.row(i).as_ref().to_vec()).unwrap_or_default();
        let newer = |j: usize| {
            micros_of(i)
                .cmp(&micros_of(j))
                .then(created[i].cmp(&created[j]))
                .then_with(|| tie.as_ref().map_or(std::cmp::Ordering::Equal, |t| t.row(i).cmp(&t.row(j))))
                .is_gt()
        };
        match best.get(&k) {
            Some(&j) if !newer(j) => {}
            _ => {
                best.insert(k, i);
            }
        }
    }
    let picked: UInt32Array = best.values().map(|&i| i as u32).collect();
    let take = |c: &ArrayRef| {
        arrow_select::take::take(c.as_ref(), &picked, None).map_err(|e| Error::data(&what, e.to_string()))
    };
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (key, col) in req.join_keys.iter().zip(&keys) {
        fields.push(Field::new(&key.name, col.data_type().clone(), true));
        columns.push(take(col)?);
    }
    let micros: arrow_array::TimestampMicrosecondArray =
        picked.values().iter().map(|&i| event[i as usize].map(|t| (t / 1000) as i64)).collect();
    fields.push(Field::new(super::LATEST_EVENT_TS, crate::timestamp_type(), true));
    columns.push(Arc::new(micros.with_timezone(crate::UTC)));
    for (f, col) in req.view.schema.iter().zip(&features) {
        fields.push(Field::new(&f.name, col.data_type().clone(), true));
        columns.push(take(col)?);
    }
    let out =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| Error::data(&what, e.to_string()))?;
    Ok((out, rows_read))
}
