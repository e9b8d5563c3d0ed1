//! Names of the offline log's files, and which of them a compacted file
//! replaces.
//!
//! Ingestion names each file after what it holds:
//! `ingest-<source>-<partition hex>-<first>-<last>.parquet`, the first and
//! last stream positions of one partition's events in it. That name is the
//! log's whole bookkeeping: a restart reads from the names where the log
//! ends, and compaction merges a run of a folder's files into one whose
//! range covers theirs. Readers skip every file whose range a file of the
//! same source, partition and folder covers, so the merged file replaces
//! the run at once, before the run's files are deleted and if they never
//! are (a compaction killed in between).

/// One log file's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileName {
    /// The stream source.
    pub source: String,
    /// The stream partition (hex-decoded).
    pub partition: String,
    /// First position held.
    pub first: u128,
    /// Last position held.
    pub last: u128,
}

/// Every log file name starts with this.
pub const PREFIX: &str = "ingest-";

impl LogFileName {
    /// The name of `source`'s file holding `partition`'s positions `first..=last`.
    pub fn format(source: &str, partition: &str, first: u128, last: u128) -> String {
        let hex: String = partition.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{source}-{hex}-{first}-{last}.parquet")
    }

    /// Parses a file name (no folders); `None` for any other file.
    pub fn parse(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?.strip_suffix(".parquet")?;
        // The source may hold '-', the three fields after it do not.
        let mut parts = rest.rsplitn(4, '-');
        let (last, first, hex, source) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if source.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (first, last): (u128, u128) = (first.parse().ok()?, last.parse().ok()?);
        if first > last {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
        Some(Self { source: source.to_owned(), partition: String::from_utf8(bytes?).ok()?, first, last })
    }

    /// This name, formatted.
    pub fn name(&self) -> String {
        Self::format(&self.source, &self.partition, self.first, self.last)
    }
}

/// For `(folder, file name)` pairs, whether each is a log file another one
/// of the same folder, source and partition covers (its range inside the
/// other's): a compacted file's inputs, which readers must skip.
pub fn replaced<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<bool> {
    let parsed: Vec<Option<(&str, LogFileName)>> =
        files.into_iter().map(|(folder, name)| LogFileName::parse(name).map(|n| (folder, n))).collect();
    let mut order: Vec<usize> = (0..parsed.len()).filter(|&i| parsed[i].is_some()).collect();
    // Per (folder, source, partition): by first ascending, widest first.
    let key = |i: usize| {
        let (folder, n) = parsed[i].as_ref().expect("filtered");
        (*folder, n.source.as_str(), n.partition.as_str(), n.first, std::cmp::Reverse(n.last))
    };
    order.sort_by(|&a, &b| key(a).cmp(&key(b)));
    let mut out = vec![false; parsed.len()];
    let mut reach: Option<((&str, &str, &str), u128)> = None;
    for i in order {
        let (folder, n) = parsed[i].as_ref().expect("filtered");
        let group = (*folder, n.source.as_str(), n.partition.as_str());
        match reach {
            Some((g, last)) if g == group && n.last <= last => out[i] = true,
            _ => reach = Some((group, n.last)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let name = LogFileName::format("tx-stream", "host-1/α", 5, u128::MAX);
        assert!(!name.contains('/'));
        let parsed = LogFileName::parse(&name).unwrap();
        assert_eq!(
            parsed,
            LogFileName { source: "tx-stream".into(), partition: "host-1/α".into(), first: 5, last: u128::MAX }
        );
        assert_eq!(parsed.name(), name);
        for other in [
            "ingest-tx-zz-1-2.parquet",
            "push-1.parquet",
            "ingest-30-1-2.parquet",
            "ingest-tx-30-2-1.parquet",
            "ingest-tx-30-1-2.csv",
        ] {
            assert_eq!(LogFileName::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_covering_file_replaces_the_files_inside_its_range_in_its_folder_only() {
        let files = [
            ("d=1", "ingest-tx-30-1-10.parquet"),  // 0: covered by 1-30
            ("d=1", "ingest-tx-30-1-30.parquet"),  // 1: the merged file
            ("d=1", "ingest-tx-30-11-30.parquet"), // 2: covered
            ("d=1", "ingest-tx-30-31-40.parquet"), // 3: after it
            ("d=2", "ingest-tx-30-1-10.parquet"),  // 4: another folder
            ("d=1", "ingest-tx-31-1-10.parquet"),  // 5: another partition
            ("d=1", "ingest-ty-30-1-10.parquet"),  // 6: another source
            ("d=1", "data.parquet"),               // 7: not a log file
            ("d=1", "ingest-tx-30-25-35.parquet"), // 8: overlaps, not inside
        ];
        assert_eq!(replaced(files), [true, false, true, false, false, false, false, false, false]);
    }
}
