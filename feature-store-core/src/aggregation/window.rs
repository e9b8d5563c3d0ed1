//! The aggregates of one key at many entity times, in O((events + rows) ·
//! log events): the key's events are sorted once, each entity time is a
//! range of them found by binary search, and the range's aggregate comes
//! from a structure built once per key and function (a merge tree, a
//! distinct-count sweep, tiles and blocks for hopping windows). Every path
//! is compared with [`super::reference`] on random data in the tests.

use std::collections::HashMap;

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
    fn empty(&self) -> AggState {
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
    fn range(&self, lo: i64, hi: i64) -> (usize, usize) {
        let start = self.orders.partition_point(|o| o.time <= lo);
        let end = self.orders.partition_point(|o| o.time <= hi);
        (start, end.max(start))
    }
}

/// The aggregate of `events` for each entity time in `times`, in `times`' order.
pub fn aggregate_key(events: &KeyEvents<'_>, spec: &WindowSpec, times: &[i64]) -> Result<Vec<Output>> {
    debug_assert!(events.orders.is_sorted());
    if let Some(interval) = spec.interval {
        return hopping(events, spec, interval, times);
    }
    let rows = spec.input.is_none();
    let ranges: Vec<(usize, usize)> = times
        .iter()
        .map(|t| {
            let (lo, hi) = spec.bounds(*t);
            events.range(lo, hi)
        })
        .collect();
    match spec.function {
        AggregateFunction::Count if rows => Ok(ranges.iter().map(|(a, b)| Output::Int((b - a) as i64)).collect()),
        AggregateFunction::CountDistinct => Ok(distinct_counts(events, &ranges)),
        AggregateFunction::LastN => ranges.iter().map(|r| last_n(events, spec, *r)).collect(),
        AggregateFunction::ApproxCountDistinct => ranges
            .iter()
            .map(|(a, b)| {
                let mut s = spec.empty();
                (*a..*b).for_each(|i| s.update(events.value(i), events.orders[i], false));
                s.finish()
            })
            .collect(),
        _ => {
            let tree = MergeTree::new(events, spec, rows);
            ranges.iter().map(|(a, b)| tree.query(*a, *b).finish()).collect()
        }
    }
}

/// A bottom-up segment tree of states; a range's state merges its nodes
/// oldest first, so results depend only on the key's events.
struct MergeTree {
    size: usize,
    nodes: Vec<AggState>,
    empty: AggState,
}

impl MergeTree {
    fn new(events: &KeyEvents<'_>, spec: &WindowSpec, rows: bool) -> Self {
        let n = events.orders.len();
        let size = n.next_power_of_two().max(1);
        let empty = spec.empty();
        let mut nodes = vec![empty.clone(); 2 * size];
        for i in 0..n {
            nodes[size + i].update(events.value(i), events.orders[i], rows);
        }
        for i in (1..size).rev() {
            let mut s = nodes[2 * i].clone();
            s.merge(&nodes[2 * i + 1]);
            nodes[i] = s;
        }
        Self { size, nodes, empty }
    }

    fn query(&self, lo: usize, hi: usize) -> AggState {
        let (mut l, mut r) = (lo + self.size, hi + self.size);
        let mut left = self.empty.clone();
        let mut right: Vec<usize> = Vec::new();
        while l < r {
            if l & 1 == 1 {
                left.merge(&self.nodes[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                right.push(r);
            }
            l >>= 1;
            r >>= 1;
        }
        for i in right.iter().rev() {
            left.merge(&self.nodes[*i]);
        }
        left
    }
}

/// Exact distinct counts of many ranges in one sweep: ranges sorted by end;
/// a Fenwick tree marks each value's latest position so far, so a range's
/// count is the marks at or after its start.
fn distinct_counts(events: &KeyEvents<'_>, ranges: &[(usize, usize)]) -> Vec<Output> {
    let n = events.orders.len();
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|q| ranges[*q].1);
    let mut fenwick = vec![0i64; n + 1];
    let add = |f: &mut Vec<i64>, i: usize, d: i64| {
        let mut i = i + 1;
        while i <= n {
            f[i] += d;
            i += i & i.wrapping_neg();
        }
    };
    let prefix = |f: &Vec<i64>, i: usize| {
        let (mut i, mut s) = (i, 0);
        while i > 0 {
            s += f[i];
            i -= i & i.wrapping_neg();
        }
        s
    };
    let mut latest: HashMap<Value, usize> = HashMap::new();
    let mut out = vec![Output::Int(0); ranges.len()];
    let mut at = 0usize;
    for q in order {
        let (lo, hi) = ranges[q];
        while at < hi {
            if let Some(v) = events.value(at) {
                if let Some(prev) = latest.insert(v.clone().canonical(), at) {
                    add(&mut fenwick, prev, -1);
                }
                add(&mut fenwick, at, 1);
            }
            at += 1;
        }
        out[q] = Output::Int(prefix(&fenwick, hi) - prefix(&fenwick, lo));
    }
    out
}

/// `last_n` of a range: walks back over its newest values. Events with the
/// same order as the n-th are all candidates, since the tie goes by value.
fn last_n(events: &KeyEvents<'_>, spec: &WindowSpec, (lo, hi): (usize, usize)) -> Result<Output> {
    let n = spec.n.unwrap_or(1) as usize;
    let mut s = spec.empty();
    let mut taken = 0usize;
    let mut boundary: Option<Order> = None;
    for i in (lo..hi).rev() {
        let Some(v) = events.value(i) else { continue };
        if let Some(b) = boundary
            && events.orders[i] != b
        {
            break;
        }
        s.update(Some(v), events.orders[i], false);
        taken += 1;
        if taken == n {
            boundary = Some(events.orders[i]);
        }
    }
    s.finish()
}

/// Hopping windows: states per tile, blocks merged from their halves on
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

/// The state of `block`, from its occupied halves when not yet known.
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
    for half in block.halves().into_iter().flatten().filter(|h| occupied(h)) {
        state.merge(&block_state(known, half, empty, occupied));
    }
    known.insert(block, state.clone());
    state
}
