//! Range queries over events sorted by key, then by order: each structure
//! is built once in O(events) or O(events · log) and answers the aggregate of
//! any range of one key's events in O(log events), so a retrieval costs
//! O((entity rows + events) · log events) whatever the window sizes.
//!
//! - row counts: the range's length;
//! - `count`, `sum`, `mean`: prefix counts and prefix sums (exact `i128` for
//!   integers, double-double for floats restarting at each key, with
//!   infinities and NaN counted apart);
//! - `variance`, `stddev`: prefix sums of the values and their squares,
//!   shifted by the key's first value and kept in double-double;
//! - `min`, `max`: a segment tree of positions;
//! - `first`, `last`, `last_n`: the nearest non-null value before or after
//!   each position (events are sorted by (order, value), so the newest value
//!   of a range is its last non-null one);
//! - `count_distinct`: a wavelet matrix over each value's previous
//!   occurrence: the values of a range that do not occur earlier in it;
//! - `approx_count_distinct`: a scan of the range into a HyperLogLog.
//!
//! Floating results may differ from a merge of partial states in the last
//! bits (both stay within 1e-9 relative of the exact result); everything else
//! is identical. The tests compare every path with [`super::reference`].

use std::collections::HashMap;
use std::sync::Arc;

use super::state::{AggState, Order, Output};
use super::value::Value;
use super::window::WindowSpec;
use crate::model::AggregateFunction;
use crate::{Error, Result};

/// One aggregation's structure over a set of sorted events.
#[derive(Debug)]
pub struct RangeIndex {
    function: AggregateFunction,
    /// Shared between aggregations of one column that need the same
    /// structure ([`RangeIndex::shares`]), e.g. `sum` and `mean`.
    kind: Arc<Kind>,
}

#[derive(Debug)]
enum Kind {
    Rows,
    Counts(Vec<u32>),
    IntSums {
        counts: Vec<u32>,
        sums: Vec<i128>,
    },
    /// Float prefix sums restart at each key (so a key's results never depend
    /// on the other keys in the build): key `g`'s sums sit at `i + g`,
    /// `group_of[i]` giving `g` for position `i`.
    FloatSums {
        counts: Vec<u32>,
        group_of: Vec<u32>,
        sums: Vec<Dd>,
        /// Prefix counts of +inf, -inf and NaN, kept only when the column has any.
        special: Option<Vec<[u32; 3]>>,
    },
    Moments {
        counts: Vec<u32>,
        group_of: Vec<u32>,
        s1: Vec<Dd>,
        s2: Vec<Dd>,
        special: Option<Vec<u32>>,
    },
    Extreme {
        max: bool,
        size: usize,
        tree: Vec<u32>,
        values: Arc<[Option<Value>]>,
    },
    Ends {
        n: usize,
        next: Vec<u32>,
        prev: Vec<u32>,
        values: Arc<[Option<Value>]>,
    },
    /// Each position's previous occurrence (see `new`), and the wavelet
    /// matrix over it for long ranges.
    Distinct {
        previous: Vec<u32>,
        wavelet: Wavelet,
    },
    Scan {
        spec: WindowSpec,
        orders: Arc<[Order]>,
        values: Arc<[Option<Value>]>,
    },
}

const NONE: u32 = u32::MAX;

/// Ranges up to this many events are scanned rather than looked up in a
/// tree: contiguous memory is faster than a tree's scattered nodes.
/// (Small in tests, so that random data reaches both paths.)
const SCAN: usize = if cfg!(test) { 4 } else { 64 };

impl RangeIndex {
    /// The structure for `spec` over `values` (one per event, empty when
    /// counting rows) of events sorted by key and order; `groups` are the
    /// offsets where each key's events start, plus the end. A query never
    /// crosses a key's bounds.
    pub fn new(
        spec: &WindowSpec,
        orders: Arc<[Order]>,
        values: Arc<[Option<Value>]>,
        groups: &[usize],
    ) -> Result<Self> {
        use AggregateFunction as F;
        let n = orders.len();
        if n >= NONE as usize {
            return Err(Error::InvalidArgument(format!("{n} events in one aggregation: more than 4,294,967,294")));
        }
        let rows = spec.input.is_none();
        let float = |v: &Value| match v {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        let counts = || {
            let mut c = Vec::with_capacity(n + 1);
            c.push(0u32);
            let mut at = 0u32;
            for v in values.iter() {
                at += u32::from(v.is_some());
                c.push(at);
            }
            c
        };
        let kind = match spec.function {
            F::Count if rows => Kind::Rows,
            F::Count => Kind::Counts(counts()),
            F::Sum | F::Mean if matches!(spec.input, Some(crate::ValueType::Int32 | crate::ValueType::Int64)) => {
                let mut sums = Vec::with_capacity(n + 1);
                let mut at = 0i128;
                sums.push(at);
                for v in values.iter() {
                    if let Some(Value::Int(i)) = v {
                        at += i128::from(*i);
                    }
                    sums.push(at);
                }
                Kind::IntSums { counts: counts(), sums }
            }
            F::Sum | F::Mean => {
                let group_of = group_of(groups, n);
                let mut sums = Vec::with_capacity(n + groups.len());
                let mut special = Vec::with_capacity(n + 1);
                let mut sp = [0u32; 3];
                special.push(sp);
                for g in groups.windows(2) {
                    let mut s = Dd::ZERO;
                    sums.push(s);
                    for v in &values[g[0]..g[1]] {
                        match v.as_ref().and_then(float) {
                            Some(x) if x.is_finite() => s = s.add(x),
                            Some(x) if x.is_nan() => sp[2] += 1,
                            Some(x) if x > 0.0 => sp[0] += 1,
                            Some(_) => sp[1] += 1,
                            None => {}
                        }
                        sums.push(s);
                        special.push(sp);
                    }
                }
                let special = (sp != [0; 3]).then_some(special);
                Kind::FloatSums { counts: counts(), group_of, sums, special }
            }
            F::Variance | F::Stddev => {
                let group_of = group_of(groups, n);
                let (mut s1, mut s2) = (Vec::with_capacity(n + groups.len()), Vec::with_capacity(n + groups.len()));
                let mut special = Vec::with_capacity(n + 1);
                let mut sp = 0u32;
                special.push(sp);
                for g in groups.windows(2) {
                    // Shifting by the key's first value keeps the sums small,
                    // so the variance does not cancel away.
                    let shift = values[g[0]..g[1]]
                        .iter()
                        .flatten()
                        .find_map(|v| float(v).filter(|x| x.is_finite()))
                        .unwrap_or(0.0);
                    let (mut a, mut b) = (Dd::ZERO, Dd::ZERO);
                    s1.push(a);
                    s2.push(b);
                    for v in &values[g[0]..g[1]] {
                        match v.as_ref().and_then(float) {
                            Some(x) if x.is_finite() => {
                                let d = Dd::from(x).add(-shift);
                                a = a.add_dd(d);
                                b = b.add_dd(d.mul(d));
                            }
                            Some(_) => sp += 1,
                            None => {}
                        }
                        s1.push(a);
                        s2.push(b);
                        special.push(sp);
                    }
                }
                let special = (sp != 0).then_some(special);
                Kind::Moments { counts: counts(), group_of, s1, s2, special }
            }
            F::Min | F::Max => {
                let max = spec.function == F::Max;
                let size = n.next_power_of_two().max(1);
                let mut tree = vec![NONE; 2 * size];
                for (i, v) in values.iter().enumerate() {
                    if v.is_some() {
                        tree[size + i] = i as u32;
                    }
                }
                for i in (1..size).rev() {
                    tree[i] = pick(&values, max, tree[2 * i], tree[2 * i + 1]);
                }
                Kind::Extreme { max, size, tree, values }
            }
            F::First | F::Last | F::LastN => {
                let mut next = vec![NONE; n + 1];
                let mut prev = vec![NONE; n + 1];
                for i in (0..n).rev() {
                    next[i] = if values[i].is_some() { i as u32 } else { next[i + 1] };
                }
                // prev[i + 1]: the last non-null at or before i.
                for i in 0..n {
                    prev[i + 1] = if values[i].is_some() { i as u32 } else { prev[i] };
                }
                Kind::Ends { n: spec.n.unwrap_or(1) as usize, next, prev, values }
            }
            F::CountDistinct => {
                // p[i]: 1 + the previous position of the same value in the
                // key, 0 for none; nulls never count (n + 1). A range [a, b)
                // has as many distinct values as positions with p[i] <= a.
                let mut p = vec![(n + 1) as u32; n];
                let mut last: HashMap<Value, u32> = HashMap::new();
                for g in groups.windows(2) {
                    last.clear();
                    for (i, slot) in p.iter_mut().enumerate().take(g[1]).skip(g[0]) {
                        if let Some(v) = &values[i] {
                            *slot = last.insert(v.clone().canonical(), i as u32 + 1).unwrap_or(0);
                        }
                    }
                }
                Kind::Distinct { wavelet: Wavelet::new(p.clone()), previous: p }
            }
            F::ApproxCountDistinct => Kind::Scan { spec: spec.clone(), orders, values },
        };
        Ok(Self { function: spec.function, kind: Arc::new(kind) })
    }

    /// Whether an index built for `a` answers `b` too (over the same values):
    /// they differ only in windows, or in what they make of one structure.
    pub fn shares(a: &WindowSpec, b: &WindowSpec) -> bool {
        use AggregateFunction as F;
        a.input == b.input
            && match (a.function, b.function) {
                (F::Sum | F::Mean, F::Sum | F::Mean)
                | (F::Variance | F::Stddev, F::Variance | F::Stddev)
                | (F::First | F::Last, F::First | F::Last)
                | (F::Min, F::Min)
                | (F::Max, F::Max)
                | (F::Count, F::Count)
                | (F::CountDistinct, F::CountDistinct) => true,
                (F::LastN, F::LastN) => a.n == b.n,
                _ => false,
            }
    }

    /// This index's structure answering `spec`, which it [`RangeIndex::shares`].
    pub fn sharing(&self, spec: &WindowSpec) -> Self {
        Self { function: spec.function, kind: Arc::clone(&self.kind) }
    }

    /// The aggregate of events `a..b` (all of one key).
    pub fn query(&self, a: usize, b: usize) -> Result<Output> {
        debug_assert!(a <= b);
        Ok(match self.kind.as_ref() {
            Kind::Rows => Output::Int((b - a) as i64),
            Kind::Counts(c) => Output::Int(i64::from(c[b] - c[a])),
            Kind::IntSums { counts, sums } => {
                let count = counts[b] - counts[a];
                let sum = sums[b] - sums[a];
                match (count, self.function) {
                    (0, _) => Output::Null,
                    (_, AggregateFunction::Mean) => Output::Float(sum as f64 / f64::from(count)),
                    _ => Output::Int(
                        i64::try_from(sum)
                            .map_err(|_| Error::InvalidArgument(format!("sum {sum} does not fit in int64")))?,
                    ),
                }
            }
            Kind::FloatSums { counts, group_of, sums, special } => {
                let count = counts[b] - counts[a];
                if count == 0 {
                    return Ok(Output::Null);
                }
                let sp = |k: usize| special.as_ref().map_or(0, |s| s[b][k] - s[a][k]);
                let sum = match (sp(0), sp(1), sp(2)) {
                    (_, _, 1..) => f64::NAN,
                    (1.., 1.., _) => f64::NAN,
                    (1.., 0, _) => f64::INFINITY,
                    (0, 1.., _) => f64::NEG_INFINITY,
                    (0, 0, 0) => {
                        let g = group_of[a] as usize;
                        sums[b + g].sub(sums[a + g]).value()
                    }
                };
                if self.function == AggregateFunction::Mean {
                    Output::Float(sum / f64::from(count))
                } else {
                    Output::Float(sum)
                }
            }
            Kind::Moments { counts, group_of, s1, s2, special } => {
                let count = counts[b] - counts[a];
                if count < 2 {
                    return Ok(Output::Null);
                }
                if special.as_ref().is_some_and(|s| s[b] - s[a] > 0) {
                    return Ok(Output::Float(f64::NAN));
                }
                let n = f64::from(count);
                let g = group_of[a] as usize;
                let (x, xx) = (s1[b + g].sub(s1[a + g]), s2[b + g].sub(s2[a + g]));
                // (Σd² − (Σd)²/n) / (n − 1), d = x − shift: the same for any shift.
                let m2 = xx.sub(x.mul(x).div(n)).value().max(0.0);
                let var = m2 / (n - 1.0);
                Output::Float(if self.function == AggregateFunction::Stddev { var.sqrt() } else { var })
            }
            Kind::Extreme { max, values, .. } if b - a <= SCAN => {
                let best = (a..b).fold(NONE, |best, i| pick(values, *max, best, i as u32));
                match values.get(best as usize).and_then(Option::as_ref) {
                    Some(v) => Output::Value(v.clone()),
                    None => Output::Null,
                }
            }
            Kind::Extreme { max, size, tree, values } => {
                let (mut l, mut r) = (a + size, b + size);
                let mut best = NONE;
                while l < r {
                    if l & 1 == 1 {
                        best = pick(values, *max, best, tree[l]);
                        l += 1;
                    }
                    if r & 1 == 1 {
                        r -= 1;
                        best = pick(values, *max, best, tree[r]);
                    }
                    l >>= 1;
                    r >>= 1;
                }
                match values.get(best as usize).and_then(Option::as_ref) {
                    Some(v) => Output::Value(v.clone()),
                    None => Output::Null,
                }
            }
            Kind::Ends { n, next, prev, values } => {
                let value = |i: u32| values[i as usize].clone().expect("non-null by construction");
                match self.function {
                    AggregateFunction::First => match next[a] {
                        i if i != NONE && (i as usize) < b => Output::Value(value(i)),
                        _ => Output::Null,
                    },
                    AggregateFunction::Last => match prev[b] {
                        i if i != NONE && (i as usize) >= a => Output::Value(value(i)),
                        _ => Output::Null,
                    },
                    _ => {
                        let mut items = Vec::new();
                        let mut at = prev[b];
                        while at != NONE && (at as usize) >= a && items.len() < *n {
                            items.push(value(at));
                            at = prev[at as usize];
                        }
                        if items.is_empty() { Output::Null } else { Output::List(items) }
                    }
                }
            }
            // Short ranges are counted directly: a sequential scan beats the
            // wavelet's cache misses.
            Kind::Distinct { previous, .. } if b - a <= SCAN => {
                Output::Int(previous[a..b].iter().filter(|p| **p <= a as u32).count() as i64)
            }
            Kind::Distinct { wavelet, .. } => Output::Int(wavelet.count_below(a, b, a as u32 + 1) as i64),
            Kind::Scan { spec, orders, values } => {
                let mut s = AggState::new(spec.function, spec.input.as_ref(), spec.n);
                for i in a..b {
                    s.update(values[i].as_ref(), orders[i], false);
                }
                s.finish()?
            }
        })
    }
}

/// The key (group number) of each position.
fn group_of(groups: &[usize], n: usize) -> Vec<u32> {
    let mut out = vec![0u32; n];
    for (g, w) in groups.windows(2).enumerate() {
        out[w[0]..w[1]].fill(g as u32);
    }
    out
}

/// The position holding the smaller (or larger) value; ties keep `x`, the older.
fn pick(values: &[Option<Value>], max: bool, x: u32, y: u32) -> u32 {
    match (values.get(x as usize).and_then(Option::as_ref), values.get(y as usize).and_then(Option::as_ref)) {
        (None, _) => y,
        (_, None) => x,
        (Some(a), Some(b)) => {
            if (max && b > a) || (!max && b < a) {
                y
            } else {
                x
            }
        }
    }
}

/// A double-double number: `hi + lo` with `|lo| <= ulp(hi) / 2`, about 106 bits.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dd {
    hi: f64,
    lo: f64,
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

impl Dd {
    const ZERO: Self = Self { hi: 0.0, lo: 0.0 };

    fn from(x: f64) -> Self {
        Self { hi: x, lo: 0.0 }
    }

    fn add(self, x: f64) -> Self {
        self.add_dd(Self::from(x))
    }

    fn add_dd(self, o: Self) -> Self {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let (s, e) = two_sum(s, e + t);
        let (hi, lo) = two_sum(s, e + f);
        Self { hi, lo }
    }

    fn sub(self, o: Self) -> Self {
        self.add_dd(Self { hi: -o.hi, lo: -o.lo })
    }

    fn mul(self, o: Self) -> Self {
        let p = self.hi * o.hi;
        let e = self.hi.mul_add(o.hi, -p);
        let (hi, lo) = two_sum(p, e + (self.hi * o.lo + self.lo * o.hi));
        Self { hi, lo }
    }

    fn div(self, d: f64) -> Self {
        let q = self.hi / d;
        // The remainder self − q·d, exactly, then one correction step.
        let p = q * d;
        let e = q.mul_add(d, -p);
        let r = (self.hi - p - e) + self.lo;
        let (hi, lo) = two_sum(q, r / d);
        Self { hi, lo }
    }

    fn value(self) -> f64 {
        self.hi + self.lo
    }
}

/// A wavelet matrix over `u32` values: counts the values below a bound in
/// any range in O(bits).
#[derive(Debug)]
struct Wavelet {
    levels: Vec<(Bits, usize)>,
}

/// A bit vector with rank: ones before each 64-bit word.
#[derive(Debug)]
struct Bits {
    words: Vec<u64>,
    ranks: Vec<u32>,
}

impl Bits {
    fn rank1(&self, i: usize) -> usize {
        let (w, b) = (i / 64, i % 64);
        let base = self.ranks[w] as usize;
        if b == 0 { base } else { base + (self.words[w] & ((1u64 << b) - 1)).count_ones() as usize }
    }
}

impl Wavelet {
    fn new(mut values: Vec<u32>) -> Self {
        let max = values.iter().copied().max().unwrap_or(0);
        let bits = 32 - max.leading_zeros();
        let n = values.len();
        let mut levels = Vec::with_capacity(bits as usize);
        let mut next = Vec::with_capacity(n);
        for level in (0..bits).rev() {
            let mut words = vec![0u64; n / 64 + 1];
            for (i, v) in values.iter().enumerate() {
                if v >> level & 1 == 1 {
                    words[i / 64] |= 1 << (i % 64);
                }
            }
            let mut ranks = Vec::with_capacity(words.len() + 1);
            let mut at = 0u32;
            for w in &words {
                ranks.push(at);
                at += w.count_ones();
            }
            ranks.push(at);
            let zeros = n - at as usize;
            next.clear();
            next.extend(values.iter().filter(|v| *v >> level & 1 == 0));
            next.extend(values.iter().filter(|v| *v >> level & 1 == 1));
            std::mem::swap(&mut values, &mut next);
            levels.push((Bits { words, ranks }, zeros));
        }
        Self { levels }
    }

    /// How many values in `a..b` are below `x`.
    fn count_below(&self, mut a: usize, mut b: usize, x: u32) -> usize {
        let bits = self.levels.len() as u32;
        if bits < 32 && x >> bits != 0 {
            return b - a;
        }
        let mut count = 0;
        for (depth, (level, zeros)) in self.levels.iter().enumerate() {
            let bit = x >> (bits - 1 - depth as u32) & 1;
            let (ones_a, ones_b) = (level.rank1(a), level.rank1(b));
            if bit == 1 {
                count += (b - ones_b) - (a - ones_a);
                a = zeros + ones_a;
                b = zeros + ones_b;
            } else {
                a -= ones_a;
                b -= ones_b;
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key's results are the same to the bit whatever other keys share the
    /// index (so partitioned and spilled retrievals equal in-memory ones).
    #[test]
    fn results_do_not_depend_on_the_other_keys() {
        let mut x = 0x2545_f491u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let sizes = [37usize, 1, 0, 64];
        let mut orders = Vec::new();
        let mut values = Vec::new();
        let mut groups = vec![0];
        for size in sizes {
            for i in 0..size {
                orders.push(Order { time: i as i64, created: None });
                values.push((next(5) != 0).then(|| Value::Float((next(1000) as f64 - 300.0) * 1.37e5 + 0.1)));
            }
            groups.push(orders.len());
        }
        for function in [AggregateFunction::Sum, AggregateFunction::Mean, AggregateFunction::Stddev] {
            let spec =
                WindowSpec { function, input: Some(crate::ValueType::Float64), n: None, window: 10, interval: None };
            let all = RangeIndex::new(&spec, orders.clone().into(), values.clone().into(), &groups).unwrap();
            for g in groups.windows(2) {
                let (s, e) = (g[0], g[1]);
                let alone =
                    RangeIndex::new(&spec, orders[s..e].to_vec().into(), values[s..e].to_vec().into(), &[0, e - s])
                        .unwrap();
                for a in s..=e {
                    for b in a..=e {
                        let (x, y) = (all.query(a, b).unwrap(), alone.query(a - s, b - s).unwrap());
                        let same = match (&x, &y) {
                            (Output::Float(p), Output::Float(q)) => p.to_bits() == q.to_bits(),
                            _ => x == y,
                        };
                        assert!(same, "{function} {a}..{b}: {x:?} in the shared index, {y:?} alone");
                    }
                }
            }
        }
    }

    #[test]
    fn wavelet_counts_values_below() {
        let values: Vec<u32> = (0..500u32).map(|i| (i * 7919 + 13) % 97).collect();
        let w = Wavelet::new(values.clone());
        for (a, b, x) in [(0, 500, 50), (10, 20, 0), (3, 400, 97), (100, 100, 5), (0, 1, 200), (37, 451, 13)] {
            let want = values[a..b].iter().filter(|v| **v < x).count();
            assert_eq!(w.count_below(a, b, x), want, "{a}..{b} below {x}");
        }
    }

    #[test]
    fn double_double_keeps_what_doubles_lose() {
        let big = Dd::from(1e16).add(1.0).add(1.0);
        assert_eq!(big.sub(Dd::from(1e16)).value(), 2.0);
        let sq = Dd::from(1e8 + 1.0).mul(Dd::from(1e8 + 1.0));
        assert_eq!(sq.sub(Dd::from(1e16)).value(), 2e8 + 1.0);
        assert_eq!(Dd::from(1.0).div(3.0).mul(Dd::from(3.0)).value(), 1.0);
    }
}
