//! Time-window aggregation: the arithmetic behind aggregation views.
//!
//! For an entity row at time `t` and an aggregation over window `w`, the
//! aggregate covers the key's events with `t - w < e <= t` (continuous), or
//! `b - w < e <= b` with `b` = `t` floored to the `aggregation_interval`
//! (hopping). [`state`] defines each function once (partial states that
//! update, merge and finish); [`window`] answers many entity times of one
//! key fast; [`tiles`] is the interval grid and its coarser blocks that
//! online serving stores, [`tile_rows`] the rows materialization writes; [`reference`] is the brute-force definition the
//! others are tested against.

pub mod columns;
mod hll;
pub mod index;
pub mod reference;
pub mod state;
pub mod tile_rows;
pub mod tiles;
pub mod value;
pub mod window;

pub use columns::outputs_to_array;
pub use index::RangeIndex;
pub use state::{AggState, Order, Output};
pub use tile_rows::{TileWindow, tile_rows};
pub use value::{Value, ValueReader};
pub use window::{KeyEvents, WindowSpec, aggregate_key, sort_ties};

#[cfg(test)]
mod tests;
