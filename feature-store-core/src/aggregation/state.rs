//! Partial aggregates: the state of one function over a set of events,
//! updated one value at a time, merged with another set's state, finished
//! into the feature value, and encoded for online tiles. Training and
//! serving both finish states built by this code, so they agree.
//!
//! Merges are deterministic: given the same states merged in the same
//! order, the result is the same to the bit. Float sums are double-double
//! (about 106 bits), so a sum stays within 1e-15 relative of the exactly
//! rounded sum unless its terms cancel; integer sums are exact (i128).

use std::collections::BTreeSet;

use super::hll::Hll;
use super::value::{Reader, Value};
use crate::model::AggregateFunction;
use crate::{Error, Result, ValueType};

/// Where an event sits in time: its event time, then its created time
/// (null lowest), as retrieval breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    /// Event time, microseconds since the epoch.
    pub time: i64,
    /// Created time, microseconds; `None` sorts lowest.
    pub created: Option<i64>,
}

/// A finished aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// No value (an empty window for most functions).
    Null,
    /// A count or an integer sum.
    Int(i64),
    /// A mean, a float sum, a variance or a standard deviation.
    Float(f64),
    /// `min`, `max`, `first`, `last`: an input value.
    Value(Value),
    /// `last_n`: newest first.
    List(Vec<Value>),
}

/// A double-double float sum, with infinities and NaN kept apart so they
/// propagate as in a plain sum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FloatSum {
    hi: f64,
    lo: f64,
    special: f64,
}

fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

impl FloatSum {
    fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.special += x;
            return;
        }
        self.merge(&Self { hi: x, lo: 0.0, special: 0.0 });
    }

    fn merge(&mut self, o: &Self) {
        self.special += o.special;
        let (s, e) = two_sum(self.hi, o.hi);
        let e = e + (self.lo + o.lo);
        let (hi, lo) = two_sum(s, e);
        (self.hi, self.lo) = if hi.is_finite() { (hi, lo) } else { (hi, 0.0) };
    }

    fn value(&self) -> f64 {
        if self.special != 0.0 || self.special.is_nan() {
            return self.special + self.hi;
        }
        self.hi + self.lo
    }
}

/// A sum of integers (exact) or of floats.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sum {
    Int(i128),
    Float(FloatSum),
}

impl Sum {
    fn new(input: Option<&ValueType>) -> Self {
        match input {
            Some(ValueType::Int32 | ValueType::Int64) => Self::Int(0),
            _ => Self::Float(FloatSum::default()),
        }
    }

    fn add(&mut self, v: &Value) {
        match (self, v) {
            (Self::Int(s), Value::Int(i)) => *s += i128::from(*i),
            (Self::Float(s), Value::Float(f)) => s.add(*f),
            (Self::Float(s), Value::Int(i)) => s.add(*i as f64),
            _ => {}
        }
    }

    fn merge(&mut self, o: &Self) {
        match (self, o) {
            (Self::Int(a), Self::Int(b)) => *a += b,
            (Self::Float(a), Self::Float(b)) => a.merge(b),
            _ => {}
        }
    }

    fn as_f64(&self) -> f64 {
        match self {
            Self::Int(i) => *i as f64,
            Self::Float(f) => f.value(),
        }
    }
}

/// The partial aggregate of one function: opaque, built with
/// [`AggState::new`], fed with [`AggState::update`] and [`AggState::merge`].
#[derive(Debug, Clone, PartialEq)]
pub struct AggState(Kind);

impl AggState {
    /// The empty state of `function` over a column of type `input` (`None`: rows).
    pub fn new(function: AggregateFunction, input: Option<&ValueType>, n: Option<u32>) -> Self {
        Self(Kind::new(function, input, n))
    }

    /// Adds one event: its value (`None` is a null, skipped except by a row
    /// count, `rows` true) and its order.
    pub fn update(&mut self, value: Option<&Value>, order: Order, rows: bool) {
        self.0.update(value, order, rows);
    }

    /// Merges `other`, the state of the same function over other events.
    pub fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
    }

    /// The feature value. An integer sum beyond int64 is an error.
    pub fn finish(&self) -> Result<Output> {
        self.0.finish()
    }

    /// Appends a stable encoding (a tag, then the state) for online tiles.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }

    /// Reads a state written by [`AggState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let kind = Kind::decode(&mut r)?;
        if !r.done() {
            return Err(r.corrupt("trailing bytes"));
        }
        Ok(Self(kind))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `count`.
    Count(u64),
    /// `sum`.
    Sum { count: u64, sum: Sum },
    /// `mean`.
    Mean { count: u64, sum: Sum },
    /// `variance` and `stddev`: Welford's running mean and sum of squared
    /// deviations, merged with Chan's formula.
    Moments { stddev: bool, count: u64, mean: f64, m2: f64 },
    /// `min`.
    Min(Option<Value>),
    /// `max`.
    Max(Option<Value>),
    /// `first`: the least `(order, value)`.
    First(Option<(Order, Value)>),
    /// `last`: the greatest `(order, value)`.
    Last(Option<(Order, Value)>),
    /// `last_n`: up to `n` greatest `(order, value)`, greatest first.
    LastN { n: u32, items: Vec<(Order, Value)> },
    /// `count_distinct`.
    Distinct(BTreeSet<Value>),
    /// `approx_count_distinct`.
    Approx(Hll),
}

impl Kind {
    fn new(function: AggregateFunction, input: Option<&ValueType>, n: Option<u32>) -> Self {
        use AggregateFunction as F;
        match function {
            F::Count => Self::Count(0),
            F::Sum => Self::Sum { count: 0, sum: Sum::new(input) },
            F::Mean => Self::Mean { count: 0, sum: Sum::new(input) },
            F::Variance => Self::Moments { stddev: false, count: 0, mean: 0.0, m2: 0.0 },
            F::Stddev => Self::Moments { stddev: true, count: 0, mean: 0.0, m2: 0.0 },
            F::Min => Self::Min(None),
            F::Max => Self::Max(None),
            F::First => Self::First(None),
            F::Last => Self::Last(None),
            F::LastN => Self::LastN { n: n.unwrap_or(1), items: Vec::new() },
            F::CountDistinct => Self::Distinct(BTreeSet::new()),
            F::ApproxCountDistinct => Self::Approx(Hll::default()),
        }
    }

    fn update(&mut self, value: Option<&Value>, order: Order, rows: bool) {
        if let Self::Count(c) = self {
            if rows || value.is_some() {
                *c += 1;
            }
            return;
        }
        let Some(v) = value else { return };
        match self {
            Self::Count(_) => unreachable!("handled above"),
            Self::Sum { count, sum } | Self::Mean { count, sum } => {
                *count += 1;
                sum.add(v);
            }
            Self::Moments { count, mean, m2, .. } => {
                let x = match v {
                    Value::Int(i) => *i as f64,
                    Value::Float(f) => *f,
                    _ => return,
                };
                *count += 1;
                let delta = x - *mean;
                *mean += delta / *count as f64;
                *m2 += delta * (x - *mean);
            }
            Self::Min(m) => {
                if m.as_ref().is_none_or(|m| v < m) {
                    *m = Some(v.clone());
                }
            }
            Self::Max(m) => {
                if m.as_ref().is_none_or(|m| v > m) {
                    *m = Some(v.clone());
                }
            }
            Self::First(f) => {
                if f.as_ref().is_none_or(|(o, x)| (order, v) < (*o, x)) {
                    *f = Some((order, v.clone()));
                }
            }
            Self::Last(l) => {
                if l.as_ref().is_none_or(|(o, x)| (order, v) > (*o, x)) {
                    *l = Some((order, v.clone()));
                }
            }
            Self::LastN { n, items } => keep_newest(items, *n, std::iter::once((order, v.clone()))),
            Self::Distinct(set) => {
                set.insert(v.clone().canonical());
            }
            Self::Approx(h) => h.insert(v),
        }
    }

    fn merge(&mut self, other: &Self) {
        match (self, other) {
            (Self::Count(a), Self::Count(b)) => *a += b,
            (Self::Sum { count, sum }, Self::Sum { count: c, sum: s })
            | (Self::Mean { count, sum }, Self::Mean { count: c, sum: s }) => {
                *count += c;
                sum.merge(s);
            }
            (Self::Moments { count, mean, m2, .. }, Self::Moments { count: cb, mean: mb, m2: m2b, .. }) => {
                if *cb == 0 {
                    return;
                }
                if *count == 0 {
                    (*count, *mean, *m2) = (*cb, *mb, *m2b);
                    return;
                }
                let (na, nb) = (*count as f64, *cb as f64);
                let n = na + nb;
                let delta = mb - *mean;
                *mean += delta * nb / n;
                *m2 += m2b + delta * delta * na * nb / n;
                *count += cb;
            }
            (Self::Min(a), Self::Min(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|a| b < a)
                {
                    *a = Some(b.clone());
                }
            }
            (Self::Max(a), Self::Max(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|a| b > a)
                {
                    *a = Some(b.clone());
                }
            }
            (Self::First(a), Self::First(b)) => {
                if let Some((ob, vb)) = b
                    && a.as_ref().is_none_or(|(oa, va)| (ob, vb) < (oa, va))
                {
                    *a = Some((*ob, vb.clone()));
                }
            }
            (Self::Last(a), Self::Last(b)) => {
                if let Some((ob, vb)) = b
                    && a.as_ref().is_none_or(|(oa, va)| (ob, vb) > (oa, va))
                {
                    *a = Some((*ob, vb.clone()));
                }
            }
            (Self::LastN { n, items }, Self::LastN { items: more, .. }) => keep_newest(items, *n, more.iter().cloned()),
            (Self::Distinct(a), Self::Distinct(b)) => a.extend(b.iter().cloned()),
            (Self::Approx(a), Self::Approx(b)) => a.merge(b),
            (a, b) => debug_assert!(false, "merging different functions: {a:?} and {b:?}"),
        }
    }

    fn finish(&self) -> Result<Output> {
        Ok(match self {
            Self::Count(c) => Output::Int(i64::try_from(*c).unwrap_or(i64::MAX)),
            Self::Sum { count: 0, .. } | Self::Mean { count: 0, .. } => Output::Null,
            Self::Sum { sum: Sum::Int(s), .. } => Output::Int(
                i64::try_from(*s).map_err(|_| Error::InvalidArgument(format!("sum {s} does not fit in int64")))?,
            ),
            Self::Sum { sum, .. } => Output::Float(sum.as_f64()),
            Self::Mean { count, sum } => Output::Float(sum.as_f64() / *count as f64),
            Self::Moments { count, .. } if *count < 2 => Output::Null,
            Self::Moments { stddev, count, m2, .. } => {
                let var = m2 / (*count - 1) as f64;
                Output::Float(if *stddev { var.sqrt() } else { var })
            }
            Self::Min(v) | Self::Max(v) => v.clone().map_or(Output::Null, Output::Value),
            Self::First(v) | Self::Last(v) => v.as_ref().map_or(Output::Null, |(_, v)| Output::Value(v.clone())),
            Self::LastN { items, .. } if items.is_empty() => Output::Null,
            Self::LastN { items, .. } => Output::List(items.iter().map(|(_, v)| v.clone()).collect()),
            Self::Distinct(set) => Output::Int(set.len() as i64),
            Self::Approx(h) => Output::Int(h.estimate()),
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let put_order = |out: &mut Vec<u8>, o: &Order| {
            out.extend_from_slice(&o.time.to_le_bytes());
            match o.created {
                None => out.push(0),
                Some(c) => {
                    out.push(1);
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        };
        let put_sum = |out: &mut Vec<u8>, count: u64, sum: &Sum| {
            out.extend_from_slice(&count.to_le_bytes());
            match sum {
                Sum::Int(i) => {
                    out.push(0);
                    out.extend_from_slice(&i.to_le_bytes());
                }
                Sum::Float(f) => {
                    out.push(1);
                    for x in [f.hi, f.lo, f.special] {
                        out.extend_from_slice(&x.to_bits().to_le_bytes());
                    }
                }
            }
        };
        let put_opt = |out: &mut Vec<u8>, v: &Option<Value>| match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.encode(out);
            }
        };
        let put_pair = |out: &mut Vec<u8>, p: &Option<(Order, Value)>| match p {
            None => out.push(0),
            Some((o, v)) => {
                out.push(1);
                put_order(out, o);
                v.encode(out);
            }
        };
        match self {
            Self::Count(c) => {
                out.push(1);
                out.extend_from_slice(&c.to_le_bytes());
            }
            Self::Sum { count, sum } => {
                out.push(2);
                put_sum(out, *count, sum);
            }
            Self::Mean { count, sum } => {
                out.push(3);
                put_sum(out, *count, sum);
            }
            Self::Moments { stddev, count, mean, m2 } => {
                out.push(4);
                out.push(u8::from(*stddev));
                out.extend_from_slice(&count.to_le_bytes());
                out.extend_from_slice(&mean.to_bits().to_le_bytes());
                out.extend_from_slice(&m2.to_bits().to_le_bytes());
            }
            Self::Min(v) => {
                out.push(5);
                put_opt(out, v);
            }
            Self::Max(v) => {
                out.push(6);
                put_opt(out, v);
            }
            Self::First(p) => {
                out.push(7);
                put_pair(out, p);
            }
            Self::Last(p) => {
                out.push(8);
                put_pair(out, p);
            }
            Self::LastN { n, items } => {
                out.push(9);
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for (o, v) in items {
                    put_order(out, o);
                    v.encode(out);
                }
            }
            Self::Distinct(set) => {
                out.push(10);
                out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                set.iter().for_each(|v| v.encode(out));
            }
            Self::Approx(h) => {
                out.push(11);
                h.encode(out);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        fn order(r: &mut Reader<'_>) -> Result<Order> {
            let time = r.i64()?;
            let created = match r.u8()? {
                0 => None,
                1 => Some(r.i64()?),
                _ => return Err(r.corrupt("bad created-time flag")),
            };
            Ok(Order { time, created })
        }
        fn sum(r: &mut Reader<'_>) -> Result<(u64, Sum)> {
            let count = r.u64()?;
            let sum = match r.u8()? {
                0 => Sum::Int(r.i128()?),
                1 => Sum::Float(FloatSum { hi: r.f64()?, lo: r.f64()?, special: r.f64()? }),
                _ => return Err(r.corrupt("bad sum kind")),
            };
            Ok((count, sum))
        }
        fn opt(r: &mut Reader<'_>) -> Result<Option<Value>> {
            Ok(match r.u8()? {
                0 => None,
                _ => Some(Value::decode(r)?),
            })
        }
        fn pair(r: &mut Reader<'_>) -> Result<Option<(Order, Value)>> {
            Ok(match r.u8()? {
                0 => None,
                _ => Some((order(r)?, Value::decode(r)?)),
            })
        }
        Ok(match r.u8()? {
            1 => Self::Count(r.u64()?),
            2 => {
                let (count, sum) = sum(r)?;
                Self::Sum { count, sum }
            }
            3 => {
                let (count, sum) = sum(r)?;
                Self::Mean { count, sum }
            }
            4 => Self::Moments { stddev: r.u8()? != 0, count: r.u64()?, mean: r.f64()?, m2: r.f64()? },
            5 => Self::Min(opt(r)?),
            6 => Self::Max(opt(r)?),
            7 => Self::First(pair(r)?),
            8 => Self::Last(pair(r)?),
            9 => {
                let n = r.u32()?;
                let len = r.len()?;
                if len > n as usize {
                    return Err(r.corrupt("more values than last_n keeps"));
                }
                let mut items = Vec::new(); // len comes from the bytes: no preallocation
                for _ in 0..len {
                    items.push((order(r)?, Value::decode(r)?));
                }
                Self::LastN { n, items }
            }
            10 => {
                let len = r.len()?;
                let mut set = BTreeSet::new();
                for _ in 0..len {
                    set.insert(Value::decode(r)?);
                }
                Self::Distinct(set)
            }
            11 => Self::Approx(Hll::decode(r)?),
            t => return Err(r.corrupt(&format!("unknown aggregate tag {t}"))),
        })
    }
}

/// Keeps the `n` greatest `(order, value)` pairs of `items` and `more`, greatest first.
fn keep_newest(items: &mut Vec<(Order, Value)>, n: u32, more: impl Iterator<Item = (Order, Value)>) {
    items.extend(more);
    items.sort_by(|a, b| b.cmp(a));
    items.truncate(n as usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: i64) -> Order {
        Order { time, created: None }
    }

    fn run(function: AggregateFunction, input: ValueType, values: &[Option<Value>]) -> Output {
        let mut s = AggState::new(function, Some(&input), Some(2));
        for (i, v) in values.iter().enumerate() {
            s.update(v.as_ref(), at(i as i64), false);
        }
        s.finish().unwrap()
    }

    #[test]
    fn functions_skip_nulls_and_handle_empty_windows() {
        use AggregateFunction as F;
        let ints = [Some(Value::Int(3)), None, Some(Value::Int(-1)), Some(Value::Int(3))];
        assert_eq!(run(F::Count, ValueType::Int64, &ints), Output::Int(3));
        assert_eq!(run(F::Sum, ValueType::Int64, &ints), Output::Int(5));
        assert_eq!(run(F::Mean, ValueType::Int64, &ints), Output::Float(5.0 / 3.0));
        assert_eq!(run(F::Min, ValueType::Int64, &ints), Output::Value(Value::Int(-1)));
        assert_eq!(run(F::Max, ValueType::Int64, &ints), Output::Value(Value::Int(3)));
        assert_eq!(run(F::First, ValueType::Int64, &ints), Output::Value(Value::Int(3)));
        assert_eq!(run(F::Last, ValueType::Int64, &ints), Output::Value(Value::Int(3)));
        assert_eq!(run(F::LastN, ValueType::Int64, &ints), Output::List(vec![Value::Int(3), Value::Int(-1)]));
        assert_eq!(run(F::CountDistinct, ValueType::Int64, &ints), Output::Int(2));
        assert_eq!(run(F::ApproxCountDistinct, ValueType::Int64, &ints), Output::Int(2));
        // Welford's running moments: within an ulp or two of the exact 16/3.
        let Output::Float(var) = run(F::Variance, ValueType::Int64, &ints) else { panic!("a float") };
        assert!((var - 16.0 / 3.0).abs() < 1e-14, "{var}");
        for f in AggregateFunction::ALL {
            let empty = run(f, ValueType::Int64, &[None]);
            let zero = matches!(f, F::Count | F::CountDistinct | F::ApproxCountDistinct);
            assert_eq!(empty, if zero { Output::Int(0) } else { Output::Null }, "{f}");
        }
        let mut rows = AggState::new(F::Count, None, None);
        rows.update(None, at(0), true);
        assert_eq!(rows.finish().unwrap(), Output::Int(1));
    }

    #[test]
    fn ties_at_equal_times_go_by_created_then_value() {
        let mut last = AggState::new(AggregateFunction::Last, Some(&ValueType::Int64), None);
        let mut first = AggState::new(AggregateFunction::First, Some(&ValueType::Int64), None);
        for (v, created) in [(5, Some(1)), (9, None), (7, Some(1)), (1, Some(0))] {
            let o = Order { time: 10, created };
            last.update(Some(&Value::Int(v)), o, false);
            first.update(Some(&Value::Int(v)), o, false);
        }
        assert_eq!(last.finish().unwrap(), Output::Value(Value::Int(7)));
        assert_eq!(first.finish().unwrap(), Output::Value(Value::Int(9)));
    }

    #[test]
    fn float_sums_are_compensated_and_merges_match_updates() {
        let values = [1e16, 1.0, -1e16, 1.0, 1e-3];
        let mut whole = AggState::new(AggregateFunction::Sum, Some(&ValueType::Float64), None);
        values.iter().for_each(|v| whole.update(Some(&Value::Float(*v)), at(0), false));
        assert_eq!(whole.finish().unwrap(), Output::Float(2.001));
        let mut inf = AggState::new(AggregateFunction::Sum, Some(&ValueType::Float64), None);
        for v in [1.0, f64::INFINITY, 2.0] {
            inf.update(Some(&Value::Float(v)), at(0), false);
        }
        assert_eq!(inf.finish().unwrap(), Output::Float(f64::INFINITY));

        // Merging two halves gives the states' values of the whole.
        for f in AggregateFunction::ALL {
            let input = ValueType::Float64;
            let (mut a, mut b, mut all) = (
                AggState::new(f, Some(&input), Some(3)),
                AggState::new(f, Some(&input), Some(3)),
                AggState::new(f, Some(&input), Some(3)),
            );
            for i in 0..40 {
                let v = Value::Float(f64::from(i * 7 % 13) - 4.5);
                if i < 17 { &mut a } else { &mut b }.update(Some(&v), at(i64::from(i)), false);
                all.update(Some(&v), at(i64::from(i)), false);
            }
            a.merge(&b);
            match (a.finish().unwrap(), all.finish().unwrap()) {
                (Output::Float(x), Output::Float(y)) => {
                    assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{f}: {x} {y}")
                }
                (x, y) => assert_eq!(x, y, "{f}"),
            }
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        for f in AggregateFunction::ALL {
            for input in [ValueType::Int64, ValueType::Float64, ValueType::String] {
                let numeric_only = matches!(
                    f,
                    AggregateFunction::Sum
                        | AggregateFunction::Mean
                        | AggregateFunction::Variance
                        | AggregateFunction::Stddev
                );
                if numeric_only && input == ValueType::String {
                    continue;
                }
                let mut s = AggState::new(f, Some(&input), Some(2));
                for i in 0..5i64 {
                    let v = match input {
                        ValueType::Int64 => Value::Int(i),
                        ValueType::Float64 => Value::Float(i as f64 / 3.0),
                        _ => Value::Str(format!("v{i}").into()),
                    };
                    s.update(Some(&v), Order { time: i, created: (i % 2 == 0).then_some(i) }, false);
                }
                let mut bytes = Vec::new();
                s.encode(&mut bytes);
                assert_eq!(AggState::decode(&bytes).unwrap(), s, "{f} {input}");
                assert!(AggState::decode(&bytes[..bytes.len() - 1]).is_err(), "{f} {input}: truncated");
            }
        }
        assert!(AggState::decode(&[99]).is_err());
    }

    #[test]
    fn integer_sums_are_exact_and_overflow_is_an_error() {
        let mut s = AggState::new(AggregateFunction::Sum, Some(&ValueType::Int64), None);
        s.update(Some(&Value::Int(i64::MAX)), at(0), false);
        s.update(Some(&Value::Int(-1)), at(0), false);
        assert_eq!(s.finish().unwrap(), Output::Int(i64::MAX - 1));
        s.update(Some(&Value::Int(2)), at(0), false);
        assert!(s.finish().unwrap_err().to_string().contains("does not fit in int64"));
    }
}
