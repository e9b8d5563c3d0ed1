//! The window structures and hopping tiles against the brute-force
//! definition, on random keys: every function, continuous and hopping
//! windows, events exactly on window bounds, equal event times with and
//! without created times, nulls and empty windows.

use super::index::RangeIndex;
use super::reference::aggregate_at;
use super::state::{Order, Output};
use super::value::Value;
use super::window::{KeyEvents, WindowSpec, aggregate_key};
use crate::ValueType;
use crate::model::AggregateFunction;

/// xorshift64*: enough randomness for test data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn value(rng: &mut Rng, input: &ValueType) -> Option<Value> {
    if rng.below(6) == 0 {
        return None;
    }
    let small = rng.below(9) as i64 - 3;
    Some(match input {
        ValueType::Int64 => Value::Int(small),
        ValueType::Float64 => match rng.below(40) {
            0 => Value::Float(f64::NAN),
            1 => Value::Float(-0.0),
            _ => Value::Float(small as f64 * 0.25 + 1e6 * (rng.below(2) as f64)),
        },
        _ => Value::Str(format!("s{small}").into()),
    })
}

fn close(a: &Output, b: &Output) -> bool {
    match (a, b) {
        (Output::Float(x), Output::Float(y)) => {
            x.to_bits() == y.to_bits() || (x - y).abs() <= 1e-9 * y.abs().max(1.0) || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

#[test]
fn window_structures_match_the_definition() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let unit = 1_000_000i64; // one second in µs
    for seed in 0..300 {
        let events_n = rng.below(60) as usize;
        let span = 1 + rng.below(40) as i64;
        let interval = [None, Some(unit), Some(3 * unit), Some(4 * unit)][rng.below(4) as usize];
        let window = interval.unwrap_or(unit) * (1 + rng.below(12) as i64);
        let input = [ValueType::Int64, ValueType::Float64, ValueType::String][rng.below(3) as usize].clone();
        let mut events: Vec<(Order, Option<Value>)> = (0..events_n)
            .map(|_| {
                let time = rng.below(span as u64) as i64 * unit - 5 * unit;
                let created = (rng.below(3) != 0).then(|| rng.below(3) as i64);
                (Order { time, created }, value(&mut rng, &input))
            })
            .collect();
        events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let orders: Vec<Order> = events.iter().map(|e| e.0).collect();
        let values: Vec<Option<Value>> = events.iter().map(|e| e.1.clone()).collect();
        // Entity times on event times, on window bounds and between.
        let mut times: Vec<i64> = (0..25).map(|_| (rng.below(span as u64 + 20) as i64 - 10) * unit / 2).collect();
        times.extend(orders.iter().take(5).flat_map(|o| [o.time, o.time + window, o.time + window - 1]));
        for function in AggregateFunction::ALL {
            let numeric_only = matches!(
                function,
                AggregateFunction::Sum
                    | AggregateFunction::Mean
                    | AggregateFunction::Variance
                    | AggregateFunction::Stddev
            );
            if numeric_only && input == ValueType::String {
                continue;
            }
            for rows in [false, true] {
                if rows && function != AggregateFunction::Count {
                    continue;
                }
                let spec = WindowSpec {
                    function,
                    input: (!rows).then(|| input.clone()),
                    n: Some(1 + rng.below(4) as u32),
                    window,
                    interval,
                };
                let key = KeyEvents { orders: &orders, values: if rows { &[] } else { &values } };
                let fast = aggregate_key(&key, &spec, &times).unwrap();
                // The range index answers hopping bounds too (as retrieval asks it).
                let index = RangeIndex::new(&spec, key.orders.into(), key.values.into(), &[0, orders.len()]).unwrap();
                for (t, got) in times.iter().zip(&fast) {
                    let want = aggregate_at(&key, &spec, *t).unwrap();
                    let (lo, hi) = spec.bounds(*t);
                    let (a, b) = key.range(lo, hi);
                    let indexed = index.query(a, b).unwrap();
                    for (path, got) in [("aggregate_key", got), ("RangeIndex", &indexed)] {
                        assert!(
                            close(got, &want),
                            "seed {seed}, {path}: {function} over {input} (rows {rows}), window {window}, interval {interval:?}, t {t}: \
                             got {got:?}, want {want:?}\nevents {events:?}"
                        );
                    }
                }
            }
        }
    }
}
