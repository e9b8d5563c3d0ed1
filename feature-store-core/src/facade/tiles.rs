//! Online tiles of aggregation views: where `materialize` writes them and
//! where a read merges them.
//!
//! An aggregation view is stored in the online store under its own name,
//! one row per (entity key, block): the key is
//! `{entity key}#{interval seconds}/{level}:{index}` (the last `#`
//! separates, block ids hold none) and the row holds, per distinct
//! partial state (function, column and n: aggregations differing only in
//! their window share one), its encoding over the block's events
//! ([`crate::aggregation::AggState::encode`]); the row's event time is the
//! block's end. A changed interval or function therefore never reads
//! tiles written for another: they are simply not found until the next
//! materialization writes them. Only blocks holding events are written. A block is always
//! rewritten whole from its events, so rewriting a window is idempotent and
//! late events land in the blocks a later run recomputes.
//!
//! A read at `now` takes `b` = `now` floored to the interval and, for each
//! aggregation, merges the blocks of `(b - w, b]` oldest first, as
//! historical retrieval's hopping windows do ([`crate::aggregation::tiles`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, RecordBatch};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::FeatureStore;
use crate::aggregation::tiles::{self, Block};
use crate::aggregation::{AggState, KeyEvents, Order, Value, ValueReader, WindowSpec, sort_ties};
use crate::model::{DataSource, FeatureView, JoinKey};
use crate::offline::{EVENT_CREATED_TS, EventsRequest, LATEST_EVENT_TS};
use crate::online::codec::entity_keys;
use crate::online::{OnlineRows, OnlineStore, OnlineView, WriteStats};
use crate::{Error, Result};

/// Rows written per store call.
const WRITE_BATCH: usize = 2048;

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

impl FeatureStore {
    /// Writes the blocks of `view` that hold events and meet the tiles of
    /// `[start, end]`, each recomputed from all of its events. Returns the
    /// events read, the rows written and the newest event time.
    pub(crate) async fn materialize_tiles(
        &self,
        online: &Arc<dyn OnlineStore>,
        view: &FeatureView,
        source: DataSource,
        join_keys: &[JoinKey],
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> Result<(u64, WriteStats, Option<DateTime<Utc>>)> {
        let interval = interval_micros(view)?;
        let top = top_level(view, interval);
        let end_us = end.timestamp_micros();
        // Tiles the window touches, and the first tile of the oldest block
        // holding one of them: blocks are recomputed from their first event.
        let first_tile = start.map(|s| tiles::tile_of(s.timestamp_micros(), interval));
        let last_tile = tiles::tile_of(end_us, interval);
        let read_from = first_tile.map(|t| Block::holding(t, top).tiles().start);
        let read_start = read_from.and_then(|t| DateTime::from_timestamp_micros(t.saturating_mul(interval)));
        let request = EventsRequest::new(view.clone(), source, join_keys.to_vec(), read_start, end);
        let read = self.offline_store()?.events(request).await?;
        let schema = read.stream.schema();
        let batches: Vec<RecordBatch> = read.stream.try_collect().await?;
        let events = arrow_select::concat::concat_batches(&schema, &batches)
            .map_err(|e| Error::data(format!("feature view \"{}\"", view.name), e.to_string()))?;
        drop(batches);
        let rows_read = events.num_rows() as u64;
        let context = format!("feature view \"{}\"", view.name);

        // Inputs by column name, and each row's entity key and order.
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
        let specs = window_specs(view, &input_types);
        let key_columns: Vec<(&str, &ArrayRef)> = join_keys
            .iter()
            .map(|k| {
                events
                    .column_by_name(&k.name)
                    .map(|c| (k.name.as_str(), c))
                    .ok_or_else(|| Error::data(&context, format!("no join key column \"{}\"", k.name)))
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
        let order_of = |i: usize| Order {
            time: ts.value(i),
            created: created.as_ref().and_then(|c| c.is_valid(i).then(|| c.value(i))),
        };
        let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut newest: Option<i64> = None;
        for (i, k) in keys.iter().enumerate() {
            if let Some(k) = k
                && ts.is_valid(i)
                && read_from.is_none_or(|f| tiles::tile_of(ts.value(i), interval) >= f)
            {
                by_key.entry(k.as_str()).or_default().push(i);
                newest = newest.max(Some(ts.value(i)));
            }
        }

        // One stored state per distinct (function, column, n).
        let mut features: Vec<String> = Vec::new();
        let mut state_specs: Vec<(&WindowSpec, &crate::model::Aggregation)> = Vec::new();
        for (spec, agg) in specs.iter().zip(&view.aggregations) {
            let name = state_name(agg);
            if !features.contains(&name) {
                features.push(name);
                state_specs.push((spec, agg));
            }
        }
        let target = OnlineView::new(view.name.clone(), None);
        let project = self.project().to_owned();
        let mut rows = OnlineRows::new(features.clone());
        let mut stats = WriteStats::default();
        let touches = |b: &Block| {
            let t = b.tiles();
            t.end > first_tile.unwrap_or(i64::MIN) && t.start <= last_tile
        };
        let mut buf = Vec::new();
        for (key, mut idx) in by_key {
            idx.sort_by_key(|i| order_of(*i));
            let orders: Vec<Order> = idx.iter().map(|i| order_of(*i)).collect();
            // Every block holding one of the key's events, at every level.
            let blocks: BTreeSet<Block> = orders
                .iter()
                .flat_map(|o| {
                    let tile = tiles::tile_of(o.time, interval);
                    (0..=top).map(move |level| Block::holding(tile, level))
                })
                .filter(|b| touches(b))
                .collect();
            let mut states: Vec<HashMap<Block, AggState>> = Vec::with_capacity(specs.len());
            for (spec, agg) in &state_specs {
                let mut values: Vec<Option<Value>> = match agg.column.as_ref() {
                    Some(c) => idx.iter().map(|i| readers[c].get(*i)).collect(),
                    None => Vec::new(),
                };
                if !values.is_empty() {
                    sort_ties(&orders, &mut values);
                }
                let events = KeyEvents { orders: &orders, values: &values };
                states.push(block_states(&events, spec, interval, &blocks));
            }
            for b in &blocks {
                rows.begin_row(tile_key(key, interval, *b), b.tiles().end.saturating_mul(interval));
                for s in &states {
                    buf.clear();
                    s[b].encode(&mut buf);
                    rows.push_value(Some(&buf));
                }
                if rows.len() >= WRITE_BATCH {
                    stats += online.write(&project, &target, &rows).await?;
                    rows = OnlineRows::new(features.clone());
                }
            }
        }
        if !rows.is_empty() {
            stats += online.write(&project, &target, &rows).await?;
        }
        Ok((rows_read, stats, newest.and_then(DateTime::from_timestamp_micros)))
    }
}

/// The state of each of `blocks` over one key's sorted events: tiles from
/// their events, coarser blocks merged from their parts oldest first (as
/// historical retrieval builds them), so both sides agree.
fn block_states(
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

/// Which blocks a read at `now` merges: the union over the requested
/// aggregations (they share the lower levels), and each one's own list.
#[derive(Debug)]
pub(crate) struct ReadPlan {
    /// Every block read, in order.
    blocks: Vec<Block>,
    /// Per requested feature: its spec, its stored state (position in
    /// `states`) and its blocks (positions in `blocks`), oldest first.
    features: Vec<(WindowSpec, usize, Vec<usize>)>,
    /// The stored states to read.
    states: Arc<[String]>,
    /// The windows' end `b`: `now` floored to the interval, µs.
    end: i64,
    interval: i64,
}

impl ReadPlan {
    pub(crate) fn new(view: &FeatureView, features: &[String], now: i64) -> Result<Self> {
        let interval = interval_micros(view)?;
        let end = tiles::floor_to(now, interval);
        let mut per_feature = Vec::with_capacity(features.len());
        let mut all = BTreeSet::new();
        let mut states: Vec<String> = Vec::new();
        for f in features {
            let agg = view.aggregations.iter().find(|a| a.output_name() == *f).ok_or_else(|| Error::NotFound {
                kind: "feature",
                name: format!("{}:{f}", view.name),
                hint: None,
            })?;
            let window = tiles::micros(agg.window);
            let spec = WindowSpec { function: agg.function, input: None, n: agg.n, window, interval: Some(interval) };
            let blocks = tiles::blocks(tiles::window_tiles(end, window, interval), tiles::max_level(window / interval));
            all.extend(blocks.iter().copied());
            let name = state_name(agg);
            let state = states.iter().position(|s| *s == name).unwrap_or_else(|| {
                states.push(name);
                states.len() - 1
            });
            per_feature.push((spec, state, blocks));
        }
        let blocks: Vec<Block> = all.into_iter().collect();
        let features = per_feature
            .into_iter()
            .map(|(spec, state, bs)| {
                let at = bs.iter().map(|b| blocks.binary_search(b).expect("in the union")).collect();
                (spec, state, at)
            })
            .collect();
        Ok(Self { blocks, features, states: states.into(), end, interval })
    }

    /// The online keys to read for `entities`: entity-major, then block.
    pub(crate) fn keys(&self, entities: &[String]) -> Vec<String> {
        entities.iter().flat_map(|e| self.blocks.iter().map(move |b| tile_key(e, self.interval, *b))).collect()
    }

    /// The stored states a read asks for.
    pub(crate) fn states(&self) -> Arc<[String]> {
        Arc::clone(&self.states)
    }

    /// Each requested feature's column, and the statuses and event times of
    /// its rows (feature-major): the merge of the row's blocks, `NOT_FOUND`
    /// (with the empty window's value) when none holds data,
    /// `OUTSIDE_MAX_AGE` when the view is not materialized up to the
    /// window's end, `NULL_VALUE` for a null aggregate.
    #[allow(clippy::type_complexity)]
    pub(crate) fn decode(
        &self,
        view: &FeatureView,
        features: &[String],
        dtypes: &[crate::ValueType],
        slots: &[Option<usize>],
        found: &[Option<crate::online::StoredRow>],
        watermark: Option<DateTime<Utc>>,
    ) -> Result<(Vec<ArrayRef>, Vec<crate::online::FeatureStatus>, Vec<Option<i64>>)> {
        use crate::aggregation::{Output, outputs_to_array};
        use crate::online::FeatureStatus;
        let nb = self.blocks.len();
        let complete = watermark.is_some_and(|w| w.timestamp_micros() >= self.end);
        let decoded: Vec<Option<Vec<Option<Vec<u8>>>>> =
            found.iter().map(|r| r.as_ref().map(|r| r.values(&self.states)).transpose()).collect::<Result<_>>()?;
        let mut columns = Vec::with_capacity(features.len());
        let mut statuses = Vec::with_capacity(features.len() * slots.len());
        let mut times = Vec::with_capacity(features.len() * slots.len());
        for (fi, ((spec, state_at, blocks), dtype)) in self.features.iter().zip(dtypes).enumerate() {
            let mut outputs = Vec::with_capacity(slots.len());
            for slot in slots {
                let Some(u) = slot else {
                    outputs.push(Output::Null);
                    statuses.push(FeatureStatus::NotFound);
                    times.push(None);
                    continue;
                };
                // States decode to their own kind (an integer or a float sum), so
                // the first stored one starts the merge.
                let mut state: Option<AggState> = None;
                for j in blocks {
                    let Some(Some(bytes)) = decoded[u * nb + j].as_ref().map(|v| &v[*state_at]) else { continue };
                    let s = AggState::decode(bytes).map_err(|e| {
                        Error::data(
                            format!("online tile of feature \"{}:{}\"", view.name, features[fi]),
                            format!("{e}"),
                        )
                    })?;
                    match &mut state {
                        None => state = Some(s),
                        Some(acc) => acc.merge(&s),
                    }
                }
                let found_any = state.is_some();
                let out = state.unwrap_or_else(|| spec.empty()).finish()?;
                statuses.push(match (found_any, &out) {
                    (false, _) => FeatureStatus::NotFound,
                    (true, _) if !complete => FeatureStatus::OutsideMaxAge,
                    (true, Output::Null) => FeatureStatus::NullValue,
                    (true, _) => FeatureStatus::Present,
                });
                times.push(found_any.then_some(self.end));
                outputs.push(out);
            }
            columns.push(outputs_to_array(&outputs, dtype)?);
        }
        Ok((columns, statuses, times))
    }
}
