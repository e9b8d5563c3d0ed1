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

/// The instants of a timestamp column; `None` for nulls. Panics if the
/// column is not a timestamp (callers check types when planning).
pub(crate) fn instants(array: &ArrayRef) -> Vec<Option<i128>> {
    fn conv<T: datafusion::arrow::datatypes::ArrowPrimitiveType<Native = i64>>(
        a: &ArrayRef,
        mul: i128,
    ) -> Vec<Option<i128>> {
        let p = a.as_primitive::<T>();
        if p.null_count() == 0 {
            p.values().iter().map(|v| Some(i128::from(*v) * mul)).collect()
        } else {
            p.iter().map(|v| v.map(|v| i128::from(v) * mul)).collect()
        }
    }
    match array.data_type() {
        DataType::Timestamp(unit, _) => {
            let mul = unit_nanos(*unit);
            match unit {
                TimeUnit::Second => conv::<TimestampSecondType>(array, mul),
                TimeUnit::Millisecond => conv::<TimestampMillisecondType>(array, mul),
                TimeUnit::Microsecond => conv::<TimestampMicrosecondType>(array, mul),
                TimeUnit::Nanosecond => conv::<TimestampNanosecondType>(array, mul),
            }
        }
        other => panic!("instants() called on {other}"),
    }
}
