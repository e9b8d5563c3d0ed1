//! Timestamps of any unit and zone as exact instants: i128 nanoseconds since
//! the epoch. Zone-aware values are instants already; naive values are taken
//! as UTC. i128 keeps every unit exact with no overflow (a µs value in year
//! 9999 does not fit i64 nanoseconds).

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};

/// Nanoseconds per unit.
pub(crate) fn unit_nanos(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// The earliest and latest instants of a timestamp column, `None` if all are
/// null; compares the stored values without converting each one.
pub(crate) fn instant_range(array: &ArrayRef) -> Option<(i128, i128)> {
    fn range<T: datafusion::arrow::datatypes::ArrowPrimitiveType<Native = i64>>(a: &ArrayRef) -> Option<(i64, i64)> {
        let p = a.as_primitive::<T>();
        if p.null_count() == 0 {
            let values = p.values();
            Some((*values.iter().min()?, *values.iter().max()?))
        } else {
            p.iter()
                .flatten()
                .fold(None, |acc, v| Some(acc.map_or((v, v), |(lo, hi): (i64, i64)| (lo.min(v), hi.max(v)))))
        }
    }
    let DataType::Timestamp(unit, _) = array.data_type() else {
        panic!("instant_range() called on {}", array.data_type());
    };
    let (lo, hi) = match unit {
        TimeUnit::Second => range::<TimestampSecondType>(array),
        TimeUnit::Millisecond => range::<TimestampMillisecondType>(array),
        TimeUnit::Microsecond => range::<TimestampMicrosecondType>(array),
        TimeUnit::Nanosecond => range::<TimestampNanosecondType>(array),
    }?;
    let mul = unit_nanos(*unit);
    Some((i128::from(lo) * mul, i128::from(hi) * mul))
}

/// A timestamp column as i64 values in a chosen unit: borrowed when the
/// column already has that unit, converted (checked) when it is coarser.
pub(crate) struct Scaled<'a> {
    pub(crate) values: std::borrow::Cow<'a, [i64]>,
    pub(crate) nulls: Option<&'a datafusion::arrow::buffer::NullBuffer>,
}

impl Scaled<'_> {
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        match self.nulls {
            Some(n) if n.is_null(i) => None,
            _ => Some(self.values[i]),
        }
    }
}

/// The finer of two units: comparisons happen there, exactly.
pub(crate) fn finer(a: TimeUnit, b: TimeUnit) -> TimeUnit {
    if unit_nanos(a) <= unit_nanos(b) { a } else { b }
}

/// Values of a timestamp column in `unit`, which must be as fine or finer.
pub(crate) fn scaled(array: &ArrayRef, unit: TimeUnit) -> datafusion::common::Result<Scaled<'_>> {
    let DataType::Timestamp(from, _) = array.data_type() else {
        return Err(datafusion::common::DataFusionError::Internal(format!("scaled() on {}", array.data_type())));
    };
    let raw: &[i64] = match from {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().values(),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().values(),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().values(),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().values(),
    };
    let nulls = array.nulls();
    let factor = unit_nanos(*from) / unit_nanos(unit);
    if factor == 1 {
        return Ok(Scaled { values: std::borrow::Cow::Borrowed(raw), nulls });
    }
    let factor = factor as i64;
    let mut out = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        match v.checked_mul(factor) {
            Some(x) => out.push(x),
            None if nulls.is_some_and(|n| n.is_null(i)) => out.push(0),
            None => {
                return Err(datafusion::common::DataFusionError::Execution(format!(
                    "timestamp {v} ({from:?}) is out of range at {unit:?} precision, which the other side of the join uses; store both sides at the same precision"
                )));
            }
        }
    }
    Ok(Scaled { values: std::borrow::Cow::Owned(out), nulls })
}
