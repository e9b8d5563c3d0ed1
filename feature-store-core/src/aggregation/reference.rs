//! The definition of a window aggregate as code: scan every event of the
//! key, keep those in the window, feed them in order to a fresh state. The
//! oracle the window structures and tiles are checked against.

use super::state::{AggState, Output};
use super::window::{KeyEvents, WindowSpec};
use crate::Result;

/// The aggregate of `events` (one key's, sorted) at entity time `t`.
pub fn aggregate_at(events: &KeyEvents<'_>, spec: &WindowSpec, t: i64) -> Result<Output> {
    let (lo, hi) = spec.bounds(t);
    let rows = spec.input.is_none();
    let mut state = AggState::new(spec.function, spec.input.as_ref(), spec.n);
    for (i, o) in events.orders.iter().enumerate() {
        if lo < o.time && o.time <= hi {
            state.update(events.values.get(i).and_then(Option::as_ref), *o, rows);
        }
    }
    state.finish()
}
