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
