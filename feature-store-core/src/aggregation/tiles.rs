//! Tiles: the partial aggregates of one key over one `aggregation_interval`,
//! and the coarser blocks built from them, so a 30-day window at a 5-minute
//! interval merges a few dozen records instead of 8,640.
//!
//! Tile `k` holds the events with `k·I < e <= (k+1)·I` (times in
//! microseconds since the Unix epoch, UTC). A block of level `L` and index
//! `j` holds tiles `j·4^L .. (j+1)·4^L`, and is the merge of its four
//! level-`L-1` parts, oldest first. A window ending at the boundary `b` is
//! the tile range `[b/I - w/I, b/I)`, cut into the fewest aligned blocks
//! ([`blocks`]) and merged oldest first, offline and online alike, so both
//! compute the same merges in the same order. A fan-out of 4 keeps both
//! costs small: an event is in one block per level (7 levels for 30 days of
//! 5-minute tiles), and a window is at most 6 blocks per level (a 30-day
//! window: at most 42 records read).

use std::ops::Range;

/// Microseconds in a duration, saturating.
pub fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The tile holding an event at `time` (µs): `k` with `k·I < time <= (k+1)·I`.
pub fn tile_of(time: i64, interval: i64) -> i64 {
    (time - 1).div_euclid(interval)
}

/// `t` floored to a multiple of `interval` (µs since the epoch).
pub fn floor_to(t: i64, interval: i64) -> i64 {
    t.div_euclid(interval) * interval
}

/// The tiles of the window `(b - window, b]`, `b` a multiple of `interval`.
pub fn window_tiles(b: i64, window: i64, interval: i64) -> Range<i64> {
    let end = b.div_euclid(interval);
    end - window / interval..end
}

/// Tiles in a block of one level more: 4.
pub const FANOUT_BITS: u8 = 2;

/// The highest block level a window of `tiles` tiles can use.
pub fn max_level(tiles: i64) -> u8 {
    let mut level = 0u8;
    while level < 30 && (1i64 << ((level + 1) * FANOUT_BITS)) <= tiles {
        level += 1;
    }
    level
}

/// One block: `level` and `index`, holding tiles `index·4^level .. (index+1)·4^level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    /// 0 for a tile.
    pub level: u8,
    /// Index among the blocks of its level.
    pub index: i64,
}

impl Block {
    /// The tiles it covers.
    pub fn tiles(&self) -> Range<i64> {
        let shift = self.level * FANOUT_BITS;
        self.index << shift..(self.index + 1) << shift
    }

    /// Its four parts one level down, oldest first; `None` for a tile.
    pub fn parts(&self) -> Option<[Block; 4]> {
        (self.level > 0).then(|| {
            let level = self.level - 1;
            let first = self.index << FANOUT_BITS;
            [0, 1, 2, 3].map(|k| Block { level, index: first + k })
        })
    }

    /// The block of `level` holding `tile`.
    pub fn holding(tile: i64, level: u8) -> Self {
        Self { level, index: tile >> (level * FANOUT_BITS) }
    }
}

/// The fewest aligned blocks of level at most `max_level` covering `tiles`, oldest first.
pub fn blocks(tiles: Range<i64>, max_level: u8) -> Vec<Block> {
    let mut out = Vec::new();
    let mut at = tiles.start;
    while at < tiles.end {
        let mut level = 0u8;
        while level < max_level {
            let size = 1i64 << ((level + 1) * FANOUT_BITS);
            if at.rem_euclid(size) != 0 || at + size > tiles.end {
                break;
            }
            level += 1;
        }
        out.push(Block { level, index: at >> (level * FANOUT_BITS) });
        at += 1 << (level * FANOUT_BITS);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_left_open_right_closed() {
        let i = 300_000_000; // 5 minutes
        assert_eq!(tile_of(i, i), 0);
        assert_eq!(tile_of(i + 1, i), 1);
        assert_eq!(tile_of(1, i), 0);
        assert_eq!(tile_of(0, i), -1);
        assert_eq!(tile_of(-1, i), -1);
        assert_eq!(floor_to(i + 7, i), i);
        assert_eq!(floor_to(-7, i), -i);
        // (b - w, b] with b = 10 I, w = 3 I: tiles 7, 8, 9 hold (7I, 10I].
        assert_eq!(window_tiles(10 * i, 3 * i, i), 7..10);
    }

    #[test]
    fn blocks_cover_exactly_and_few() {
        for start in -40i64..40 {
            for len in 0..100 {
                let range = start..start + len;
                let max = max_level(len.max(1));
                let bs = blocks(range.clone(), max);
                let mut at = range.start;
                for b in &bs {
                    assert!(b.level <= max);
                    assert_eq!(b.tiles().start, at, "{range:?}: {bs:?}");
                    at = b.tiles().end;
                }
                assert_eq!(at, range.end);
                assert!(bs.len() as u32 <= 6 * (u32::from(max) + 1), "{range:?}: {} blocks", bs.len());
            }
        }
        // 30 days of 5-minute tiles: at most a few dozen blocks.
        let tiles = 30 * 288;
        let worst = (0..tiles).map(|s| blocks(s..s + tiles, max_level(tiles)).len()).max().unwrap();
        assert!(worst <= 42, "{worst}");
        let b = Block { level: 3, index: 5 };
        let parts = b.parts().unwrap();
        assert_eq!((parts[0].tiles().start, parts[3].tiles().end), (b.tiles().start, b.tiles().end));
        assert!(parts.windows(2).all(|w| w[0].tiles().end == w[1].tiles().start));
        assert_eq!(Block::holding(b.tiles().end - 1, 3), b);
        assert_eq!(Block::holding(-1, 2), Block { level: 2, index: -1 });
    }
}
