//! The aggregates of one key at many entity times, in O((events + rows) ·
//! log events): the key's events are sorted once, each entity time is a
//! range of them found by binary search, and the range's aggregate comes
//! from a structure built once per key and function ([`RangeIndex`], or
//! tiles and blocks for hopping windows as online serving merges them).
//! Every path is compared with [`super::reference`] on random data in the tests.

use std::collections::HashMap;

use super::index::RangeIndex;
use super::state::{AggState, Order, Output};
use super::tiles::{self, Block};
use super::value::Value;
use crate::model::AggregateFunction;
use crate::{Result, ValueType};

/// One aggregation as the window code needs it.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    /// The function.
    pub function: AggregateFunction,
    /// The input column's type; `None` counts rows.
    pub input: Option<ValueType>,
    /// `last_n`'s n.
    pub n: Option<u32>,
    /// The window, µs.
    pub window: i64,
    /// The aggregation interval, µs; `None` for a continuous window.
    pub interval: Option<i64>,
}

impl WindowSpec {
    pub(crate) fn empty(&self) -> AggState {
        AggState::new(self.function, self.input.as_ref(), self.n)
    }

    /// The window's bounds for an entity time `t`: events `lo < e <= hi`.
    pub fn bounds(&self, t: i64) -> (i64, i64) {
        let end = self.interval.map_or(t, |i| tiles::floor_to(t, i));
        (end.saturating_sub(self.window), end)
    }
}

/// One key's events, sorted by order (then by value, for the tie rules):
/// the caller sorts them.
#[derive(Debug)]
pub struct KeyEvents<'a> {
    /// Event orders, ascending.
    pub orders: &'a [Order],
    /// The aggregated column's values, one per event; empty when counting rows.
    pub values: &'a [Option<Value>],
}

impl KeyEvents<'_> {
    fn value(&self, i: usize) -> Option<&Value> {
        self.values.get(i).and_then(Option::as_ref)
    }

    /// Events `lo < e <= hi` as an index range.
    pub fn range(&self, lo: i64, hi: i64) -> (usize, usize) {
        let start = self.orders.partition_point(|o| o.time <= lo);
        let end = self.orders.partition_point(|o| o.time <= hi);
        (start, end.max(start))
    }
}

/// Orders each run of events with equal [`Order`] by value (nulls first), so
/// that `rows` (a key's rows sorted by order) gives a sequence that depends
/// on the events only, never on file layout: float sums then round the same
/// way on every run.
pub fn sort_ties(orders: &[Order], values: &mut [Option<Value>]) {
    let mut start = 0;
    for i in 1..=orders.len() {
        if i == orders.len() || orders[i] != orders[start] {
            if i - start > 1 {
                values[start..i].sort_unstable();
            }
            start = i;
        }
    }
}

/// The aggregate of `events` for each entity time in `times`, in `times`'
/// order: hopping windows from tiles and blocks (as online serving merges
/// them), continuous ones from a [`RangeIndex`].
pub fn aggregate_key(events: &KeyEvents<'_>, spec: &WindowSpec, times: &[i64]) -> Result<Vec<Output>> {
    debug_assert!(events.orders.is_sorted());
    if let Some(interval) = spec.interval {
        return hopping(events, spec, interval, times);
    }
    let index = RangeIndex::new(spec, events.orders.into(), events.values.into(), &[0, events.orders.len()])?;
    times
        .iter()
        .map(|t| {
            let (lo, hi) = spec.bounds(*t);
            let (a, b) = events.range(lo, hi);
            index.query(a, b)
        })
        .collect()
}

/// Hopping windows: states per tile, blocks merged from their parts on
/// demand (memoized), each window the merge of its blocks oldest first.
fn hopping(events: &KeyEvents<'_>, spec: &WindowSpec, interval: i64, times: &[i64]) -> Result<Vec<Output>> {
    let rows = spec.input.is_none();
    let mut blocks: HashMap<Block, AggState> = HashMap::new();
    for (i, o) in events.orders.iter().enumerate() {
        let block = Block { level: 0, index: tiles::tile_of(o.time, interval) };
        blocks.entry(block).or_insert_with(|| spec.empty()).update(events.value(i), *o, rows);
    }
    let max_level = tiles::max_level(spec.window / interval);
    let empty = spec.empty();
    // Whether a block holds any event, so empty blocks are not built from their tiles.
    let occupied = |b: &Block| {
        let t = b.tiles();
        let (lo, hi) = events.range(t.start.saturating_mul(interval), t.end.saturating_mul(interval));
        lo < hi
    };
    times
        .iter()
        .map(|t| {
            let (_, end) = spec.bounds(*t);
            let mut s = empty.clone();
            for b in tiles::blocks(tiles::window_tiles(end, spec.window, interval), max_level) {
                if occupied(&b) {
                    s.merge(&block_state(&mut blocks, b, &empty, &occupied));
                }
            }
            s.finish()
        })
        .collect()
}

/// The state of `block`, from its occupied parts when not yet known.
pub(crate) fn block_state(
    known: &mut HashMap<Block, AggState>,
    block: Block,
    empty: &AggState,
    occupied: &dyn Fn(&Block) -> bool,
) -> AggState {
    if let Some(s) = known.get(&block) {
        return s.clone();
    }
    let mut state = empty.clone();
    for part in block.parts().into_iter().flatten().filter(|p| occupied(p)) {
        state.merge(&block_state(known, part, empty, occupied));
    }
    known.insert(block, state.clone());
    state
}
