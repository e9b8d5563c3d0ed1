//! Records ingestion refuses, kept with the reason: one JSON object each
//! (`source`, `received_at`, `reason`, `record`, plus `partition` and `id`
//! to find the message on the broker), written to a JSON Lines file
//! ([`DeadLetterFile`]) or published to the source's broker (a
//! [`DeadLetterSink`] its client opens, see [`super::ConsumerFactory`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Message, Payload};
use crate::{Error, Result};

/// A destination for dead letters.
#[async_trait]
pub trait DeadLetterSink: Send + std::fmt::Debug {
    /// Where letters go, for messages (no credentials).
    fn describe(&self) -> String;

    /// Delivers the letters (each one JSON object, see [`encode`]) and
    /// returns once they are durable (synced, or acknowledged by the
    /// broker): their messages are committed after this.
    async fn send(&mut self, letters: &[Bytes]) -> Result<()>;
}

/// One JSON object per `(message, reason)` of `source`.
pub fn encode(source: &str, letters: &[(&Message, &str)]) -> Vec<Bytes> {
    letters
        .iter()
        .map(|(m, reason)| {
            let record = match &m.payload {
                // Kept as JSON when it is JSON, else as the text received.
                Payload::Json(bytes) => serde_json::from_slice::<Value>(bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
                Payload::Fields(pairs) => {
                    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
                }
            };
            let letter = json!({
                "source": source,
                "received_at": m.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "reason": reason,
                "record": record,
                "partition": &*m.partition,
                "id": m.id,
            });
            Bytes::from(serde_json::to_vec(&letter).expect("JSON values serialize"))
        })
        .collect()
}

/// An append-only JSON Lines file of dead letters.
#[derive(Debug)]
pub struct DeadLetterFile {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl DeadLetterFile {
    /// The file at `path` (created, with its folder, on the first letter).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: None }
    }

    /// Where letters go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per `(message, reason)` of `source` and syncs the
    /// file, so letters are durable before their messages are committed.
    pub fn write(&mut self, source: &str, letters: &[(&Message, &str)]) -> Result<()> {
        self.append(&encode(source, letters))
    }

    fn append(&mut self, letters: &[Bytes]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for l in letters {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(&text).map_err(|e| Error::io(&self.path, e))?;
        file.sync_data().map_err(|e| Error::io(&self.path, e))
    }
}

#[async_trait]
impl DeadLetterSink for DeadLetterFile {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn send(&mut self, letters: &[Bytes]) -> Result<()> {
        self.append(letters)
    }
}

/// Dead letters as Parquet files in a folder (`dead_letter: path/x.parquet`,
/// a local path or an object store URL), written through the offline
/// store's writer: readable by the tools that read the offline log (DuckDB
/// `read_parquet('x.parquet/*.parquet')`, Polars, pyarrow datasets).
///
/// Each write is one file per stream partition, named by the first and
/// last positions it holds (`dead-letters-<partition hex>-<first>-<last>.parquet`)
/// and appended atomically. Letters at or below the newest position a file
/// already holds are skipped, so a replay after a crash adds nothing: unlike
/// a JSON Lines file, these dead letters are exactly once.
#[derive(Debug)]
pub struct ParquetDeadLetters {
    folder: crate::model::DataSource,
    /// Per partition, the newest position written; read from the folder on
    /// the first write.
    written: Option<std::collections::HashMap<String, u128>>,
}

/// Every Parquet dead-letter file's name starts with this.
const PARQUET_PREFIX: &str = "dead-letters-";

impl ParquetDeadLetters {
    /// Letters of stream source `stream` into the folder `path` (a path the
    /// offline store resolves, or a URL).
    pub fn new(stream: &str, path: &str) -> Result<Self> {
        let folder =
            crate::model::DataSource::builder(format!("{stream}_dead_letters"), path, "received_at").build()?;
        Ok(Self { folder, written: None })
    }

    /// Where letters go.
    pub fn describe(&self) -> String {
        self.folder.path.clone()
    }

    /// The file name of `partition`'s letters at `first..=last`.
    fn file_name(partition: &str, first: u128, last: u128) -> String {
        let hex: String = partition.bytes().map(|b| format!("{b:02x}")).collect();
        format!("{PARQUET_PREFIX}{hex}-{first}-{last}.parquet")
    }

    /// The partition and last position of a file [`Self::file_name`] named.
    fn parse_name(name: &str) -> Option<(String, u128)> {
        let rest = name.strip_prefix(PARQUET_PREFIX)?.strip_suffix(".parquet")?;
        let mut parts = rest.splitn(3, '-');
        let (hex, _first, last) = (parts.next()?, parts.next()?, parts.next()?);
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
        Some((String::from_utf8(bytes?).ok()?, last.parse().ok()?))
    }

    /// Writes the letters of `source` not written before, one file per
    /// partition, and returns once every file is durable.
    pub async fn write(
        &mut self,
        writer: &dyn crate::offline::OfflineWriter,
        source: &str,
        letters: &[(&Message, &str)],
    ) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        if self.written.is_none() {
            let mut written = std::collections::HashMap::new();
            for name in writer.list_named(&self.folder, PARQUET_PREFIX).await? {
                if let Some((partition, last)) = Self::parse_name(&name) {
                    let at: &mut u128 = written.entry(partition).or_default();
                    *at = (*at).max(last);
                }
            }
            self.written = Some(written);
        }
        let written = self.written.as_mut().expect("read above");
        // Per partition, in arrival (position) order, the letters not yet written.
        let mut by_partition: std::collections::BTreeMap<&str, Vec<&(&Message, &str)>> = Default::default();
        for letter in letters {
            let m = letter.0;
            if written.get(&*m.partition).is_none_or(|&last| m.position > last) {
                by_partition.entry(&*m.partition).or_default().push(letter);
            }
        }
        for (partition, rows) in by_partition {
            let first = rows.iter().map(|(m, _)| m.position).min().expect("not empty");
            let last = rows.iter().map(|(m, _)| m.position).max().expect("not empty");
            let batch = letters_batch(source, &rows)?;
            writer.append_named(&self.folder, None, &Self::file_name(partition, first, last), vec![batch]).await?;
            written.insert(partition.to_owned(), last);
        }
        Ok(())
    }
}

/// The columns of Parquet dead letters: those of the JSON Lines form, the
/// record as the text received (JSON, or the fields as a JSON object).
fn letters_batch(source: &str, letters: &[&(&Message, &str)]) -> Result<arrow_array::RecordBatch> {
    use arrow_array::{ArrayRef, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    let utc = || Some(std::sync::Arc::<str>::from(crate::UTC));
    let schema = Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("received_at", DataType::Timestamp(TimeUnit::Microsecond, utc()), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new("partition", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        std::sync::Arc::new(StringArray::from_iter_values(letters.iter().map(|_| source))),
        std::sync::Arc::new(
            TimestampMicrosecondArray::from_iter_values(letters.iter().map(|(m, _)| m.received_at.timestamp_micros()))
                .with_timezone_opt(utc()),
        ),
        std::sync::Arc::new(StringArray::from_iter_values(letters.iter().map(|(_, why)| *why))),
        std::sync::Arc::new(StringArray::from_iter_values(letters.iter().map(|(m, _)| record_text(m)))),
        std::sync::Arc::new(StringArray::from_iter_values(letters.iter().map(|(m, _)| &*m.partition))),
        std::sync::Arc::new(StringArray::from_iter_values(letters.iter().map(|(m, _)| m.id.as_str()))),
    ];
    arrow_array::RecordBatch::try_new(std::sync::Arc::new(schema), columns)
        .map_err(|e| Error::backend("dead letters as Parquet", e))
}

/// A record as the text received: the JSON payload, or the fields as a JSON object.
fn record_text(m: &Message) -> String {
    match &m.payload {
        Payload::Json(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Payload::Fields(pairs) => {
            Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_file_names_round_trip() {
        let name = ParquetDeadLetters::file_name("host-1/α", 7, u128::MAX);
        assert!(!name.contains('/'), "{name}");
        assert_eq!(ParquetDeadLetters::parse_name(&name), Some(("host-1/α".to_owned(), u128::MAX)));
        for other in
            ["dead-letters-zz-1-2.parquet", "dead-letters-30-1.parquet", "ingest-tx-30-1-2.parquet", "x.parquet"]
        {
            assert_eq!(ParquetDeadLetters::parse_name(other), None, "{other}");
        }
    }
}
