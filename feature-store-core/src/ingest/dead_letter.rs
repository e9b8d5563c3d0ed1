//! Records ingestion refuses, kept with the reason: one JSON object per line
//! (`source`, `received_at`, `reason`, `record`, plus `partition` and `id`
//! to find the message on the broker).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Message, Payload};
use crate::{Error, Result};

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
        if letters.is_empty() {
            return Ok(());
        }
        let mut text = Vec::new();
        for (m, reason) in letters {
            let record = match &m.payload {
                // Kept as JSON when it is JSON, else as the text received.
                Payload::Json(bytes) => serde_json::from_slice::<Value>(bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())),
                Payload::Fields(pairs) => {
                    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
                }
            };
            let line = json!({
                "source": source,
                "received_at": m.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "reason": reason,
                "record": record,
                "partition": &*m.partition,
                "id": m.id,
            });
            serde_json::to_writer(&mut text, &line).expect("JSON values serialize");
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
