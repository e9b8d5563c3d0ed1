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

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{TimestampMicrosecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use super::FeatureStore;
use crate::aggregation::tile_rows::{
    TILE_END, TILE_EVENTS, TILE_KEY, TILE_NEWEST, TileBuilder, TileWindow, interval_micros, state_name, state_names,
    tile_key,
};
use crate::aggregation::tiles::{self, Block};
use crate::aggregation::{AggState, WindowSpec};
use crate::model::{DataSource, FeatureView};
use crate::offline::TilesRequest;
use crate::online::{OnlineRows, OnlineStore, OnlineView, ViewRead, WriteStats};
use crate::{Error, Result};

/// Rows written per store call.
const WRITE_BATCH: usize = 2048;

impl FeatureStore {
    /// Writes the blocks of `view` that hold events and meet the tiles of
    /// `[start, end]`, each recomputed from all of its events by the offline
    /// store ([`crate::offline::OfflineStore::tiles`]: on a cluster, by the
    /// executors). Returns the events read, the rows written and the newest
    /// event time.
    pub(crate) async fn materialize_tiles(
        &self,
        online: &Arc<dyn OnlineStore>,
        target: &super::materialize::WriteTarget,
        source: DataSource,
        start: Option<DateTime<Utc>>,
        end: DateTime<Utc>,
    ) -> Result<(u64, WriteStats, Option<DateTime<Utc>>)> {
        let (view, join_keys) = (&target.view, &target.join_keys[..]);
        let window = TileWindow::new(view, start, end)?;
        let request = TilesRequest::new(view.clone(), source, join_keys.to_vec(), window, end);
        let read = self.offline_store()?.tiles(request).await?;
        let context = format!("tile rows of feature view \"{}\"", view.name);
        let names = state_names(view);
        let table = OnlineView::new(target.online.name.clone(), None);
        let project = self.project().to_owned();
        let mut rows = OnlineRows::new(names.clone());
        let mut stats = WriteStats::default();
        let mut newest: Option<i64> = None;
        let mut events_counted = 0u64;
        let mut stream = read;
        while let Some(batch) = stream.try_next().await? {
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| Error::data(&context, format!("no column \"{name}\"")))
            };
            let keys =
                column(TILE_KEY)?.as_string_opt::<i32>().ok_or_else(|| Error::data(&context, "keys not text"))?;
            let ends = column(TILE_END)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| Error::data(&context, "block ends not timestamps"))?;
            let counts = column(TILE_EVENTS)?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| Error::data(&context, "event counts not integers"))?;
            let newest_col = column(TILE_NEWEST)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| Error::data(&context, "newest events not timestamps"))?;
            let states = names
                .iter()
                .map(|n| column(n)?.as_binary_opt::<i32>().ok_or_else(|| Error::data(&context, "states not bytes")))
                .collect::<Result<Vec<_>>>()?;
            for r in 0..batch.num_rows() {
                rows.begin_row(keys.value(r).to_owned(), ends.value(r));
                for s in &states {
                    rows.push_value(Some(s.value(r)));
                }
                events_counted += counts.value(r);
                if newest_col.is_valid(r) {
                    newest = newest.max(Some(newest_col.value(r)));
                }
                if rows.len() >= WRITE_BATCH {
                    stats += online.write(&project, &table, &rows).await?;
                    rows = OnlineRows::new(names.clone());
                }
            }
        }
        if !rows.is_empty() {
            stats += online.write(&project, &table, &rows).await?;
        }
        Ok((events_counted, stats, newest.and_then(DateTime::from_timestamp_micros)))
    }

    /// Adds pushed `events` (columns as [`TileBuilder`] reads them, inputs in
    /// the source's types) to the tiles of `view` holding them, at every
    /// level: each block's stored state merged with the events' state and
    /// swapped in only if the block is unchanged since it was read, else
    /// read and merged again. So concurrent pushes, from any process, lose no
    /// event. Returns how many blocks were updated.
    pub(crate) async fn push_tiles(
        &self,
        online: &Arc<dyn OnlineStore>,
        target: &super::materialize::WriteTarget,
        events: &RecordBatch,
        positions: Option<&EventPositions>,
    ) -> Result<u64> {
        let (view, join_keys) = (&target.view, &target.join_keys[..]);
        /// Rounds of lost races after which a push gives up (each round, at
        /// least one competing push has succeeded on every key that lost).
        const ROUNDS: usize = 1000;
        let keys: Vec<&str> = join_keys.iter().map(|k| k.name.as_str()).collect();
        let builder = TileBuilder::new(view, &keys, events)?;
        let (by_key, _) = builder.by_key(|_| true);
        let mut pending: Vec<PendingBlock> = Vec::new();
        for (key, idx) in by_key {
            let idx = Arc::new(idx);
            for (b, states) in builder.key_states(idx.to_vec(), |_| true) {
                let (k, ts) = builder.row(key, b);
                pending.push((k, ts, b, states, Arc::clone(&idx)));
            }
        }
        let table = OnlineView::new(target.online.name.clone(), None);
        let project = self.project();
        // With positions, each block row also records what it has applied.
        let mut stored_names = builder.features.clone();
        if positions.is_some() {
            stored_names.push(APPLIED.to_owned());
        }
        let names: Arc<[String]> = stored_names.clone().into();
        let context = |key: &str| format!("online tile \"{key}\" of feature view \"{}\"", view.name);
        let mut updated = 0;
        let mut buf = Vec::new();
        for chunk in pending.chunks(WRITE_BATCH) {
            let mut left: Vec<&PendingBlock> = chunk.iter().collect();
            let mut round = 0;
            while !left.is_empty() {
                round += 1;
                if round > ROUNDS {
                    return Err(Error::backend(
                        format!("push to the online tiles of feature view \"{}\"", view.name),
                        format!(
                            "{} blocks were still being changed by other writers after {ROUNDS} attempts (the \
                             other blocks of the push were updated); materialize the push's time range to rebuild them",
                            left.len()
                        ),
                    ));
                }
                let read =
                    ViewRead::new(table.name.clone(), Arc::clone(&names), left.iter().map(|p| p.0.clone()).collect());
                let found = online.read(project, &[read]).await?.remove(0);
                let mut rows = OnlineRows::new(stored_names.clone());
                // Rows written, by position in `left`; a block whose events were all applied is left as it is.
                let mut written: Vec<usize> = Vec::with_capacity(left.len());
                let mut expected = Vec::with_capacity(left.len());
                for (li, ((key, ts, block, all_states, idx), stored)) in
                    left.iter().map(|p| (&p.0, p.1, p.2, &p.3, &p.4)).zip(&found).enumerate()
                {
                    let stored_values = stored.as_ref().map(|r| r.values(&stored_names)).transpose()?;
                    let mut fresh_states = None;
                    let mut applied = Applied::default();
                    if let Some(pos) = positions {
                        if let Some(bytes) = stored_values.as_ref().and_then(|v| v[builder.features.len()].as_ref()) {
                            applied = Applied::decode(bytes).map_err(|e| Error::data(context(key), e))?;
                        }
                        let fresh: Vec<usize> = idx
                            .iter()
                            .copied()
                            .filter(|&i| !applied.contains(pos.partition(i), pos.position(i)))
                            .collect();
                        if fresh.is_empty() {
                            continue;
                        }
                        if fresh.len() < idx.len() {
                            match builder.key_states(fresh.clone(), |b| b == &block).pop() {
                                Some((_, s)) => fresh_states = Some(s),
                                None => {
                                    // No fresh event falls in this block.
                                    continue;
                                }
                            }
                        }
                        for &i in &fresh {
                            applied.advance(pos.partition(i), pos.position(i));
                        }
                    }
                    let states = fresh_states.as_ref().unwrap_or(all_states);
                    rows.begin_row(key.clone(), ts);
                    for (s, state) in states.iter().enumerate() {
                        let mut merged = match stored_values.as_ref().and_then(|v| v[s].as_ref()) {
                            Some(bytes) => {
                                AggState::decode(bytes).map_err(|e| Error::data(context(key), e.to_string()))?
                            }
                            None => builder.specs[s].0.empty(),
                        };
                        merged.merge(state);
                        buf.clear();
                        merged.encode(&mut buf);
                        rows.push_value(Some(&buf));
                    }
                    if positions.is_some() {
                        buf.clear();
                        applied.encode(&mut buf);
                        rows.push_value(Some(&buf));
                    }
                    written.push(li);
                    expected.push(stored.clone());
                }
                let swapped = if rows.is_empty() {
                    Vec::new()
                } else {
                    online.compare_and_swap(project, &table, &rows, &expected).await?
                };
                updated += swapped.iter().filter(|s| **s).count() as u64;
                let lost: Vec<usize> =
                    written.iter().zip(&swapped).filter(|(_, ok)| !**ok).map(|(li, _)| *li).collect();
                left = lost.into_iter().map(|li| left[li]).collect();
                if !left.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        }
        Ok(updated)
    }
}

/// A block a push updates: online key, event time, block, its states over
/// all of the key's pushed events, and those events (rows of the push).
type PendingBlock = (String, i64, Block, Vec<AggState>, Arc<Vec<usize>>);

/// Name of the extra value in tile rows written by stream ingestion: per
/// stream partition, the newest position whose event the block holds.
pub(crate) const APPLIED: &str = "__applied";

/// Where each event of a batch came from: its stream partition and its
/// position there. Positions grow along a partition, so a block that
/// records the newest position it holds per partition knows which replayed
/// events it already counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventPositions {
    /// Partition names.
    pub(crate) partitions: Vec<String>,
    /// Per event row: (index into `partitions`, position).
    pub(crate) rows: Vec<(u32, u128)>,
}

impl EventPositions {
    fn partition(&self, row: usize) -> &str {
        &self.partitions[self.rows[row].0 as usize]
    }

    fn position(&self, row: usize) -> u128 {
        self.rows[row].1
    }
}

/// Per partition, the newest position a block has applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Applied(Vec<(String, u128)>);

impl Applied {
    fn contains(&self, partition: &str, position: u128) -> bool {
        self.0.iter().any(|(p, at)| p == partition && position <= *at)
    }

    fn advance(&mut self, partition: &str, position: u128) {
        match self.0.iter_mut().find(|(p, _)| p == partition) {
            Some((_, at)) => *at = (*at).max(position),
            None => self.0.push((partition.to_owned(), position)),
        }
    }

    /// `[u16 name length][name][u128 LE]` per partition.
    fn encode(&self, out: &mut Vec<u8>) {
        for (p, at) in &self.0 {
            out.extend_from_slice(&(p.len() as u16).to_le_bytes());
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
    }

    fn decode(mut bytes: &[u8]) -> std::result::Result<Self, String> {
        let bad = || "corrupt record of applied stream positions".to_owned();
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = u16::from_le_bytes(bytes.get(..2).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
            let name = std::str::from_utf8(bytes.get(2..2 + len).ok_or_else(bad)?).map_err(|_| bad())?;
            let at = u128::from_le_bytes(bytes.get(2 + len..18 + len).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            out.push((name.to_owned(), at));
            bytes = &bytes[18 + len..];
        }
        Ok(Self(out))
    }
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

#[cfg(test)]
mod tests {
    use super::Applied;

    #[test]
    fn applied_positions_round_trip_and_only_grow() {
        let mut a = Applied::default();
        a.advance("host-1", 7);
        a.advance("3", u128::MAX);
        a.advance("host-1", 5);
        assert!(a.contains("host-1", 7) && a.contains("host-1", 0) && !a.contains("host-1", 8));
        assert!(a.contains("3", u128::MAX) && !a.contains("4", 0));
        let mut bytes = Vec::new();
        a.encode(&mut bytes);
        assert_eq!(Applied::decode(&bytes).unwrap(), a);
        assert_eq!(Applied::decode(&[]).unwrap(), Applied::default());
        // Any cut of a valid record is refused, never misread.
        for cut in 1..bytes.len() {
            if cut == 2 + 6 + 16 {
                continue; // a whole first entry: a valid shorter record
            }
            assert!(Applied::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
