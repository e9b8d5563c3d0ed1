//! The rows `materialize` writes for an aggregation view: one per (entity
//! key, block) holding events, each block's partial states recomputed from
//! all of the block's events (see [`crate::facade`]'s tiles for the online
//! layout and how reads merge them). [`tile_rows`] builds them wherever the
//! events are: in the caller for a small store, per hash partition of the
//! keys on a cluster's executors; it needs every event of a key in one call.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder, TimestampMicrosecondBuilder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tiles::{self, Block};
use super::{AggState, KeyEvents, Order, Value, ValueReader, WindowSpec, sort_ties};
use crate::model::FeatureView;
use crate::offline::{EVENT_CREATED_TS, LATEST_EVENT_TS};
use crate::online::codec::entity_keys;
use crate::{Error, Result};

/// Column of tile rows: the row's online key ([`tile_key`]).
pub const TILE_KEY: &str = "__tile_key";
/// Column of tile rows: the block's end, the row's event time online.
pub const TILE_END: &str = "__tile_end";
/// Column of tile rows: on each entity key's first row, how many of its
/// events were read; 0 on its other rows.
pub const TILE_EVENTS: &str = "__tile_events";
/// Column of tile rows: on each entity key's first row, its newest event
/// time; null on its other rows.
pub const TILE_NEWEST: &str = "__tile_newest";

/// Which blocks a materialization of `[start, end]` rewrites: every block
/// holding events that meets the window's tiles, recomputed from the first
/// event of the oldest such block ([`TileWindow::read_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TileWindow {
    /// The view's `aggregation_interval`, µs.
    pub interval: i64,
    /// The highest block level its windows read.
    pub top: u8,
    /// The tile holding `start`; `None`: all history.
    pub first_tile: Option<i64>,
    /// The tile holding `end`.
    pub last_tile: i64,
}

impl TileWindow {
    /// The blocks of `view` a materialization of `[start, end]` rewrites.
    pub fn new(view: &FeatureView, start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Result<Self> {
        let interval = interval_micros(view)?;
        Ok(Self {
            interval,
            top: top_level(view, interval),
            first_tile: start.map(|s| tiles::tile_of(s.timestamp_micros(), interval)),
            last_tile: tiles::tile_of(end.timestamp_micros(), interval),
        })
    }

    /// The first tile of the oldest block rewritten.
    pub fn read_from(&self) -> Option<i64> {
        self.first_tile.map(|t| Block::holding(t, self.top).tiles().start)
    }

    /// Where reading events starts: [`TileWindow::read_from`]'s start.
    pub fn read_start(&self) -> Option<DateTime<Utc>> {
        self.read_from().and_then(|t| DateTime::from_timestamp_micros(t.saturating_mul(self.interval)))
    }

    fn touches(&self, b: &Block) -> bool {
        let t = b.tiles();
        t.end > self.first_tile.unwrap_or(i64::MIN) && t.start <= self.last_tile
    }
}

/// The stored states of `view`, in the order tile rows hold them.
pub fn state_names(view: &FeatureView) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for a in &view.aggregations {
        let name = state_name(a);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The layout of [`tile_rows`]: [`TILE_KEY`], [`TILE_END`], one binary
/// column per stored state ([`state_names`]), [`TILE_EVENTS`], [`TILE_NEWEST`].
pub fn tile_rows_schema(view: &FeatureView) -> SchemaRef {
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some(crate::UTC.into()));
    let mut fields = vec![Field::new(TILE_KEY, DataType::Utf8, false), Field::new(TILE_END, micros.clone(), false)];
    fields.extend(state_names(view).into_iter().map(|n| Field::new(n, DataType::Binary, false)));
    fields.push(Field::new(TILE_EVENTS, DataType::UInt64, false));
    fields.push(Field::new(TILE_NEWEST, micros, true));
    Arc::new(Schema::new(fields))
}

/// The tile rows of `view` that `window` rewrites, from `events` (columns:
/// the join keys named `keys`, [`LATEST_EVENT_TS`], optionally
/// [`EVENT_CREATED_TS`], and the aggregations' inputs in the view's types),
/// which must hold every event of each of their entity keys in the window.
/// Rows come out in key order, blocks in order, whatever the events' order:
/// the same events give the same rows.
pub fn tile_rows(view: &FeatureView, keys: &[&str], events: &RecordBatch, window: &TileWindow) -> Result<RecordBatch> {
    let schema = tile_rows_schema(view);
    if events.num_rows() == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    let builder = TileBuilder::new(view, keys, events)?;
    let read_from = window.read_from();
    let (by_key, _) = builder.by_key(|t| read_from.is_none_or(|f| tiles::tile_of(t, window.interval) >= f));
    let mut by_key: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    by_key.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut key_out = StringBuilder::new();
    let mut end_out = TimestampMicrosecondBuilder::new();
    let mut states_out: Vec<BinaryBuilder> = builder.features.iter().map(|_| BinaryBuilder::new()).collect();
    let mut events_out = UInt64Builder::new();
    let mut newest_out = TimestampMicrosecondBuilder::new();
    let mut buf = Vec::new();
    for (key, idx) in by_key {
        let count = idx.len() as u64;
        let newest = idx.iter().map(|&i| builder.ts.value(i)).max();
        // Every event read is in a block the window touches (its top-level
        // block starts at or after `read_from` and meets the window), so
        // each key has a first row to carry its count.
        let mut first = true;
        for (b, states) in builder.key_states(idx, |b| window.touches(b)) {
            let (k, ts) = builder.row(key, b);
            key_out.append_value(k);
            end_out.append_value(ts);
            for (out, s) in states_out.iter_mut().zip(&states) {
                buf.clear();
                s.encode(&mut buf);
                out.append_value(&buf);
            }
            events_out.append_value(if first { count } else { 0 });
            newest_out.append_option(if first { newest } else { None });
            first = false;
        }
    }
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(key_out.finish()), Arc::new(end_out.finish().with_timezone(crate::UTC))];
    columns.extend(states_out.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(events_out.finish()));
    columns.push(Arc::new(newest_out.finish().with_timezone(crate::UTC)));
    RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::data(format!("feature view \"{}\"", view.name), e.to_string()))
}

/// The online key of one block of an entity.
pub(crate) fn tile_key(entity: &str, interval: i64, block: Block) -> String {
    format!("{entity}#{}/{}:{}", interval / 1_000_000, block.level, block.index)
}

/// The name a partial state is stored under: what the state depends on.
pub(crate) fn state_name(a: &crate::model::Aggregation) -> String {
    format!(
        "{}({}){}",
        a.function,
        a.column.as_deref().unwrap_or("*"),
        a.n.map(|n| format!("/{n}")).unwrap_or_default()
    )
}

/// The interval of an online aggregation view, in µs.
pub(crate) fn interval_micros(view: &FeatureView) -> Result<i64> {
    let interval = view.aggregation_interval.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "feature view \"{}\" has no aggregation_interval, so it cannot be served online; add one",
            view.name
        ))
    })?;
    Ok(tiles::micros(interval))
}

/// Each aggregation's window spec (µs), in the view's order.
pub(crate) fn window_specs(view: &FeatureView, input_types: &HashMap<String, crate::ValueType>) -> Vec<WindowSpec> {
    view.aggregations
        .iter()
        .map(|a| WindowSpec {
            function: a.function,
            input: a.column.as_ref().and_then(|c| input_types.get(c).cloned()),
            n: a.n,
            window: tiles::micros(a.window),
            interval: view.aggregation_interval.map(tiles::micros),
        })
        .collect()
}

/// The highest block level any of the view's windows reads.
pub(crate) fn top_level(view: &FeatureView, interval: i64) -> u8 {
    view.aggregations.iter().map(|a| tiles::max_level(tiles::micros(a.window) / interval)).max().unwrap_or(0)
}

/// Per-block partial states from a batch of events (columns: the join keys,
/// [`LATEST_EVENT_TS`], optionally [`EVENT_CREATED_TS`], and the inputs),
/// as both `materialize` and `push` compute them.
pub(crate) struct TileBuilder<'a> {
    /// The stored states: names, and the spec and aggregation of each.
    pub(crate) features: Vec<String>,
    pub(crate) specs: Vec<(WindowSpec, &'a crate::model::Aggregation)>,
    readers: HashMap<String, ValueReader>,
    keys: Vec<Option<String>>,
    ts: arrow_array::TimestampMicrosecondArray,
    created: Option<arrow_array::TimestampMicrosecondArray>,
    interval: i64,
    top: u8,
}

impl<'a> TileBuilder<'a> {
    pub(crate) fn new(view: &'a FeatureView, keys: &[&str], events: &RecordBatch) -> Result<Self> {
        let interval = interval_micros(view)?;
        let context = format!("feature view \"{}\"", view.name);
        let mut input_types = HashMap::new();
        let mut readers: HashMap<String, ValueReader> = HashMap::new();
        for c in view.aggregations.iter().filter_map(|a| a.column.as_ref()) {
            if readers.contains_key(c) {
                continue;
            }
            let col = events.column_by_name(c).ok_or_else(|| Error::data(&context, format!("no column \"{c}\"")))?;
            let t = crate::ValueType::from_arrow(col.data_type())
                .ok_or_else(|| Error::data(&context, format!("column \"{c}\" has an unsupported type")))?;
            input_types.insert(c.clone(), t);
            readers.insert(c.clone(), ValueReader::new(Arc::clone(col), &context)?);
        }
        let mut features: Vec<String> = Vec::new();
        let mut specs = Vec::new();
        for (spec, agg) in window_specs(view, &input_types).into_iter().zip(&view.aggregations) {
            let name = state_name(agg);
            if !features.contains(&name) {
                features.push(name);
                specs.push((spec, agg));
            }
        }
        let key_columns: Vec<(&str, &ArrayRef)> = keys
            .iter()
            .map(|&k| {
                events
                    .column_by_name(k)
                    .map(|c| (k, c))
                    .ok_or_else(|| Error::data(&context, format!("no join key column \"{k}\"")))
            })
            .collect::<Result<_>>()?;
        let keys = entity_keys(&key_columns, events.num_rows())?;
        let ts = events
            .column_by_name(LATEST_EVENT_TS)
            .ok_or_else(|| Error::data(&context, "no event time column"))?
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let created =
            events.column_by_name(EVENT_CREATED_TS).map(|c| c.as_primitive::<TimestampMicrosecondType>().clone());
        Ok(Self { features, specs, readers, keys, ts, created, interval, top: top_level(view, interval) })
    }

    fn order(&self, i: usize) -> Order {
        Order { time: self.ts.value(i), created: self.created.as_ref().and_then(|c| c.is_valid(i).then(|| c.value(i))) }
    }

    /// The rows of each entity key (rows without a key or time left out)
    /// that `keep` accepts, and the newest event time among them.
    pub(crate) fn by_key(&self, keep: impl Fn(i64) -> bool) -> (HashMap<&str, Vec<usize>>, Option<i64>) {
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut newest: Option<i64> = None;
        for (i, k) in self.keys.iter().enumerate() {
            if let Some(k) = k
                && self.ts.is_valid(i)
                && keep(self.ts.value(i))
            {
                by_key.entry(k.as_str()).or_default().push(i);
                newest = newest.max(Some(self.ts.value(i)));
            }
        }
        (by_key, newest)
    }

    /// The states of every block holding one of a key's events (`idx`),
    /// at every level, that `touches` accepts; per block, one state per
    /// stored name.
    pub(crate) fn key_states(
        &self,
        mut idx: Vec<usize>,
        touches: impl Fn(&Block) -> bool,
    ) -> Vec<(Block, Vec<AggState>)> {
        idx.sort_by_key(|i| self.order(*i));
        let orders: Vec<Order> = idx.iter().map(|i| self.order(*i)).collect();
        let blocks: BTreeSet<Block> = orders
            .iter()
            .flat_map(|o| {
                let tile = tiles::tile_of(o.time, self.interval);
                (0..=self.top).map(move |level| Block::holding(tile, level))
            })
            .filter(|b| touches(b))
            .collect();
        let mut states: Vec<HashMap<Block, AggState>> = Vec::with_capacity(self.specs.len());
        for (spec, agg) in &self.specs {
            let mut values: Vec<Option<Value>> = match agg.column.as_ref() {
                Some(c) => idx.iter().map(|i| self.readers[c].get(*i)).collect(),
                None => Vec::new(),
            };
            if !values.is_empty() {
                sort_ties(&orders, &mut values);
            }
            let events = KeyEvents { orders: &orders, values: &values };
            states.push(block_states(&events, spec, self.interval, &blocks));
        }
        blocks
            .into_iter()
            .map(|b| (b, states.iter_mut().map(|s| s.remove(&b).expect("every block")).collect()))
            .collect()
    }

    /// The online key and event time (the block's end) of a block.
    pub(crate) fn row(&self, key: &str, block: Block) -> (String, i64) {
        (tile_key(key, self.interval, block), block.tiles().end.saturating_mul(self.interval))
    }
}

/// The state of each of `blocks` over one key's sorted events: tiles from
/// their events, coarser blocks merged from their parts oldest first (as
/// historical retrieval builds them), so both sides agree.
pub(crate) fn block_states(
    events: &KeyEvents<'_>,
    spec: &WindowSpec,
    interval: i64,
    blocks: &BTreeSet<Block>,
) -> HashMap<Block, AggState> {
    let rows = spec.input.is_none();
    let empty = spec.empty();
    let mut known: HashMap<Block, AggState> = HashMap::new();
    for (i, o) in events.orders.iter().enumerate() {
        let tile = Block { level: 0, index: tiles::tile_of(o.time, interval) };
        known.entry(tile).or_insert_with(|| empty.clone()).update(
            events.values.get(i).and_then(Option::as_ref),
            *o,
            rows,
        );
    }
    let occupied = |b: &Block| {
        let t = b.tiles();
        let (lo, hi) = events.range(t.start.saturating_mul(interval), t.end.saturating_mul(interval));
        lo < hi
    };
    for b in blocks {
        crate::aggregation::window::block_state(&mut known, *b, &empty, &occupied);
    }
    known.retain(|b, _| blocks.contains(b));
    known
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray, UInt64Array};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use super::{TILE_EVENTS, TILE_NEWEST, TileWindow, tile_rows};
    use crate::model::{AggregateFunction, Aggregation, FeatureView};
    use crate::offline::LATEST_EVENT_TS;

    fn events(rows: &[(i64, i64, Option<f64>)]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some(crate::UTC.into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("user", DataType::Int64, true),
            Field::new(LATEST_EVENT_TS, ts, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>()).with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// The same events in any order give the same rows, and each key's
    /// first row carries its event count and newest event time: what lets
    /// executors build them from a partition whose rows arrive in any order.
    #[test]
    fn the_same_events_in_any_order_give_the_same_rows() {
        let minute = 60_000_000i64;
        let view = FeatureView::builder("v", "s")
            .aggregation(Aggregation::new("amount", AggregateFunction::Sum, Duration::from_secs(3600)))
            .aggregation(Aggregation::count_rows(Duration::from_secs(600)))
            .aggregation_interval(Duration::from_secs(300))
            .build()
            .unwrap();
        let mut rows: Vec<(i64, i64, Option<f64>)> = (0..200)
            .map(|i| (i % 7, (i * 37 % 180) * minute + i % 3, (i % 5 != 0).then_some(i as f64 * 0.5)))
            .collect();
        let window =
            TileWindow::new(&view, None, chrono::DateTime::from_timestamp_micros(200 * minute).unwrap()).unwrap();
        let first = tile_rows(&view, &["user"], &events(&rows), &window).unwrap();
        rows.reverse();
        rows.rotate_left(61);
        let second = tile_rows(&view, &["user"], &events(&rows), &window).unwrap();
        assert_eq!(first, second);
        let counts = first.column_by_name(TILE_EVENTS).unwrap().as_any().downcast_ref::<UInt64Array>().unwrap();
        assert_eq!(counts.iter().flatten().sum::<u64>(), 200);
        assert_eq!(counts.iter().filter(|c| *c != Some(0)).count(), 7, "one count per key");
        let newest = first.column_by_name(TILE_NEWEST).unwrap();
        let newest = newest.as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(newest.iter().flatten().max(), rows.iter().map(|r| r.1).max());
        // A window from minute 100 rewrites only the blocks meeting it.
        let later =
            TileWindow::new(&view, chrono::DateTime::from_timestamp_micros(100 * minute), window_end(200 * minute))
                .unwrap();
        let part = tile_rows(&view, &["user"], &events(&rows), &later).unwrap();
        assert!(
            part.num_rows() > 0 && part.num_rows() < first.num_rows(),
            "{} of {}",
            part.num_rows(),
            first.num_rows()
        );
    }

    fn window_end(us: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_micros(us).unwrap()
    }
}
