//! Range queries over events sorted by key, then by order: each structure
//! is built once in O(events) or O(events · log) and answers the aggregate of
//! any range of one key's events in O(log events), so a retrieval costs
//! O((entity rows + events) · log events) whatever the window sizes.
//!
//! - row counts: the range's length;
//! - `count`, `sum`, `mean`: prefix counts and prefix sums (exact `i128` for
//!   integers, double-double for floats, with infinities and NaN counted apart);
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
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rows,
    Counts(Vec<u32>),
    IntSums { counts: Vec<u32>, sums: Vec<i128> },
    FloatSums { counts: Vec<u32>, sums: Vec<Dd>, special: Vec<[u32; 3]> },
    Moments { counts: Vec<u32>, s1: Vec<Dd>, s2: Vec<Dd>, special: Vec<u32> },
    Extreme { max: bool, size: usize, tree: Vec<u32>, values: Arc<[Option<Value>]> },
    Ends { n: usize, next: Vec<u32>, prev: Vec<u32>, values: Arc<[Option<Value>]> },
    Distinct(Wavelet),
    Scan { spec: WindowSpec, orders: Arc<[Order]>, values: Arc<[Option<Value>]> },
}

const NONE: u32 = u32::MAX;

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
                let mut sums = Vec::with_capacity(n + 1);
                let mut special = Vec::with_capacity(n + 1);
                let (mut s, mut sp) = (Dd::ZERO, [0u32; 3]);
                sums.push(s);
                special.push(sp);
                for v in values.iter() {
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
                Kind::FloatSums { counts: counts(), sums, special }
            }
            F::Variance | F::Stddev => {
                // Shifting by the key's first value keeps the sums small, so
                // the variance does not cancel away.
                let mut shift = vec![0.0; n];
                for g in groups.windows(2) {
                    let c = values[g[0]..g[1]].iter().flatten().find_map(|v| float(v).filter(|x| x.is_finite()));
                    shift[g[0]..g[1]].fill(c.unwrap_or(0.0));
                }
                let (mut s1, mut s2) = (Vec::with_capacity(n + 1), Vec::with_capacity(n + 1));
                let mut special = Vec::with_capacity(n + 1);
                let (mut a, mut b, mut sp) = (Dd::ZERO, Dd::ZERO, 0u32);
                s1.push(a);
                s2.push(b);
                special.push(sp);
                for (i, v) in values.iter().enumerate() {
                    match v.as_ref().and_then(float) {
                        Some(x) if x.is_finite() => {
                            let d = Dd::from(x).add(-shift[i]);
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
                Kind::Moments { counts: counts(), s1, s2, special }
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
                Kind::Distinct(Wavelet::new(p))
            }
            F::ApproxCountDistinct => Kind::Scan { spec: spec.clone(), orders, values },
        };
        Ok(Self { function: spec.function, kind })
    }

    /// The aggregate of events `a..b` (all of one key).
    pub fn query(&self, a: usize, b: usize) -> Result<Output> {
        debug_assert!(a <= b);
        Ok(match &self.kind {
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
            Kind::FloatSums { counts, sums, special } => {
                let count = counts[b] - counts[a];
                if count == 0 {
                    return Ok(Output::Null);
                }
                let sp = |k: usize| special[b][k] - special[a][k];
                let sum = match (sp(0), sp(1), sp(2)) {
                    (_, _, 1..) => f64::NAN,
                    (1.., 1.., _) => f64::NAN,
                    (1.., 0, _) => f64::INFINITY,
                    (0, 1.., _) => f64::NEG_INFINITY,
                    (0, 0, 0) => sums[b].sub(sums[a]).value(),
                };
                if self.function == AggregateFunction::Mean {
                    Output::Float(sum / f64::from(count))
                } else {
                    Output::Float(sum)
                }
            }
            Kind::Moments { counts, s1, s2, special } => {
                let count = counts[b] - counts[a];
                if count < 2 {
                    return Ok(Output::Null);
                }
                if special[b] - special[a] > 0 {
                    return Ok(Output::Float(f64::NAN));
                }
                let n = f64::from(count);
                let (x, xx) = (s1[b].sub(s1[a]), s2[b].sub(s2[a]));
                // (Σd² − (Σd)²/n) / (n − 1), d = x − shift: the same for any shift.
                let m2 = xx.sub(x.mul(x).div(n)).value().max(0.0);
                let var = m2 / (n - 1.0);
                Output::Float(if self.function == AggregateFunction::Stddev { var.sqrt() } else { var })
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
            Kind::Distinct(w) => Output::Int(w.count_below(a, b, a as u32 + 1) as i64),
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
