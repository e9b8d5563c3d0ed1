use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Tags, built, check_name};
use crate::Result;

/// Events arriving on a message stream (a Kafka topic, a NATS JetStream
/// subject, a Redis stream) that `feature-store ingest` writes online and
/// appends to `batch_source`, the Parquet source holding the same events.
///
/// A feature view may name a stream source as its `source`: retrieval,
/// materialization and validation read the batch source, ingestion feeds
/// the view from the stream. Connection fields may hold `${VAR}`
/// references, expanded from the environment when ingestion starts (so
/// secrets stay out of the registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StreamSource {
    /// Unique name within the project (shared with data sources).
    pub name: String,
    /// The broker.
    pub kind: StreamKind,
    /// Kafka: bootstrap brokers, `host:port[,host:port...]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Kafka: the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// NATS: server URL (`nats://host:4222`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// NATS: the JetStream stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// NATS: the subject filter (default: every subject of the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Redis Streams: a connection string in the online store's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// Redis Streams: the stream's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Kafka: client properties passed to librdkafka as written
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, ...;
    /// values may hold `${VAR}`). Those ingestion manages itself (group,
    /// offsets, commits) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// How a message encodes one event; only `json`.
    #[serde(default = "json", skip_serializing_if = "is_json")]
    pub message_format: String,
    /// Consumer group (Kafka, Redis) or durable consumer (NATS); default
    /// `feature-store-<project>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Where a new group starts reading.
    #[serde(default, skip_serializing_if = "StartPosition::is_earliest")]
    pub start: StartPosition,
    /// Where records that cannot be ingested go: a local JSON Lines file
    /// (repo-relative or absolute; default `dead_letter/<name>.jsonl`), a
    /// folder of Parquet files (a path or URL ending in `.parquet`), or
    /// on the source's own broker `topic:<name>` (Kafka), `subject:<name>`
    /// (NATS, a subject a JetStream stream captures) or `stream:<key>`
    /// (Redis). See [`DeadLetterTarget`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// Field of each record holding its event time.
    pub timestamp_field: String,
    /// Unit of event times given as numbers (epoch): `s`, `ms`, `us` or `ns`.
    #[serde(default, skip_serializing_if = "EpochUnit::is_seconds")]
    pub timestamp_unit: EpochUnit,
    /// Record field name → feature or join-key name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub field_mapping: BTreeMap<String, String>,
    /// The Parquet data source holding the same events: training,
    /// materialization and validation read it, ingestion appends to it.
    pub batch_source: String,
    /// Refuse records with fields no view over the source uses (to the
    /// dead letters) instead of ignoring those fields.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// How long ingested events may wait before they are appended to the
    /// batch source (and become visible to training).
    #[serde(
        default = "default_flush",
        with = "crate::duration::duration_serde",
        skip_serializing_if = "is_default_flush"
    )]
    pub offline_flush_interval: Duration,
    /// Human description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Team or person responsible.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

/// The broker a [`StreamSource`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamKind {
    /// A Kafka topic, read in a consumer group.
    Kafka,
    /// A NATS JetStream stream, read by a durable pull consumer.
    Nats,
    /// A Redis stream, read in a consumer group.
    RedisStream,
}

impl StreamKind {
    /// The names `kind:` accepts.
    pub const NAMES: &'static [&'static str] = &["kafka", "nats", "redis_stream"];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kafka => "kafka",
            Self::Nats => "nats",
            Self::RedisStream => "redis_stream",
        }
    }
}

impl std::fmt::Display for StreamKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a consumer group that does not exist yet starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartPosition {
    /// The oldest retained event.
    #[default]
    Earliest,
    /// Only events published after the group is created.
    Latest,
}

impl StartPosition {
    fn is_earliest(&self) -> bool {
        *self == Self::Earliest
    }
}

/// Unit of epoch-number event times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EpochUnit {
    /// Seconds (fractions allowed).
    #[default]
    #[serde(rename = "s")]
    Seconds,
    /// Milliseconds.
    #[serde(rename = "ms")]
    Millis,
    /// Microseconds.
    #[serde(rename = "us")]
    Micros,
    /// Nanoseconds.
    #[serde(rename = "ns")]
    Nanos,
}

impl EpochUnit {
    fn is_seconds(&self) -> bool {
        *self == Self::Seconds
    }

    /// Microseconds in one unit, as a float (nanoseconds: 0.001).
    pub fn micros(self) -> f64 {
        match self {
            Self::Seconds => 1e6,
            Self::Millis => 1e3,
            Self::Micros => 1.0,
            Self::Nanos => 1e-3,
        }
    }
}

/// A connection string without its credentials: the userinfo of a URL and
/// the options of a Feast-style `host:port,password=...` are left out.
fn redact(text: &str) -> String {
    let text = text.split(',').next().unwrap_or_default();
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &text[..s + 3], &text[at..]),
        _ => text.to_owned(),
    }
}

fn json() -> String {
    "json".into()
}

fn is_json(s: &str) -> bool {
    s == "json"
}

/// Default of [`StreamSource::offline_flush_interval`].
pub const DEFAULT_OFFLINE_FLUSH: Duration = Duration::from_secs(60);

fn default_flush() -> Duration {
    DEFAULT_OFFLINE_FLUSH
}

fn is_default_flush(d: &Duration) -> bool {
    *d == DEFAULT_OFFLINE_FLUSH
}

/// Where a stream source's dead letters go ([`StreamSource::dead_letter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterTarget {
    /// A local JSON Lines file (repo-relative or absolute).
    File(String),
    /// A folder of Parquet files (a path ending in `.parquet`, repo-relative,
    /// absolute or a URL), written through the offline store; see
    /// [`crate::ingest::dead_letter::ParquetDeadLetters`].
    Parquet(String),
    /// A Kafka topic on the source's brokers.
    Topic(String),
    /// A NATS subject on the source's server (a JetStream stream must capture it).
    Subject(String),
    /// A Redis stream key on the source's server.
    Stream(String),
}

impl DeadLetterTarget {
    fn noun(&self) -> &'static str {
        match self {
            Self::File(_) => "file",
            Self::Parquet(_) => "Parquet folder",
            Self::Topic(_) => "topic",
            Self::Subject(_) => "subject",
            Self::Stream(_) => "stream",
        }
    }
}

impl StreamSource {
    /// Starts building a stream source of `kind` whose events carry their
    /// time in `timestamp_field` and are kept in `batch_source`.
    pub fn builder(
        name: impl Into<String>,
        kind: StreamKind,
        timestamp_field: impl Into<String>,
        batch_source: impl Into<String>,
    ) -> StreamSourceBuilder {
        StreamSourceBuilder {
            source: StreamSource {
                name: name.into(),
                kind,
                brokers: None,
                topic: None,
                url: None,
                stream: None,
                subject: None,
                connection_string: None,
                key: None,
                properties: BTreeMap::new(),
                message_format: json(),
                group: None,
                start: StartPosition::Earliest,
                dead_letter: None,
                timestamp_field: timestamp_field.into(),
                timestamp_unit: EpochUnit::Seconds,
                field_mapping: BTreeMap::new(),
                batch_source: batch_source.into(),
                strict: false,
                offline_flush_interval: DEFAULT_OFFLINE_FLUSH,
                description: String::new(),
                owner: String::new(),
                tags: Tags::new(),
            },
        }
    }

    /// The name a record field takes after `field_mapping`.
    pub fn mapped_name<'a>(&'a self, field: &'a str) -> &'a str {
        self.field_mapping.get(field).map(String::as_str).unwrap_or(field)
    }

    /// The consumer group, defaulted from the project.
    pub fn group_or_default(&self, project: &str) -> String {
        self.group.clone().unwrap_or_else(|| format!("feature-store-{project}"))
    }

    /// The dead-letter destination as written, defaulted from the name.
    pub fn dead_letter_or_default(&self) -> String {
        self.dead_letter.clone().unwrap_or_else(|| format!("dead_letter/{}.jsonl", self.name))
    }

    /// Where dead letters go.
    pub fn dead_letter_target(&self) -> DeadLetterTarget {
        let text = self.dead_letter_or_default();
        for (prefix, make) in [
            ("topic:", DeadLetterTarget::Topic as fn(String) -> DeadLetterTarget),
            ("subject:", DeadLetterTarget::Subject),
            ("stream:", DeadLetterTarget::Stream),
        ] {
            if let Some(name) = text.strip_prefix(prefix) {
                return make(name.trim().to_owned());
            }
        }
        if text.trim_end_matches('/').to_ascii_lowercase().ends_with(".parquet") {
            return DeadLetterTarget::Parquet(text);
        }
        DeadLetterTarget::File(text)
    }

    /// What the stream is, for messages: `redis_stream events@redis://host:6379`.
    pub fn describe(&self) -> String {
        let at = match self.kind {
            StreamKind::Kafka => {
                format!("{} on {}", self.topic.as_deref().unwrap_or("?"), self.brokers.as_deref().unwrap_or("?"))
            }
            StreamKind::Nats => format!(
                "{}{} on {}",
                self.stream.as_deref().unwrap_or("?"),
                self.subject.as_deref().map(|s| format!(" ({s})")).unwrap_or_default(),
                self.url.as_deref().unwrap_or("?")
            ),
            StreamKind::RedisStream => format!(
                "{} on {}",
                self.key.as_deref().unwrap_or("?"),
                redact(self.connection_string.as_deref().unwrap_or("?"))
            ),
        };
        format!("{} stream \"{}\" ({at})", self.kind, self.name)
    }

    pub(crate) fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e);
        }
        let need = |field: &str, value: &Option<String>, what: &str, out: &mut Vec<String>| {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                out.push(format!("a {} source needs `{field}` ({what})", self.kind));
            }
        };
        let refuse = |field: &str, value: &Option<String>, out: &mut Vec<String>| {
            if value.is_some() {
                out.push(format!("`{field}` does not apply to a {} source", self.kind));
            }
        };
        match self.kind {
            StreamKind::Kafka => {
                need("brokers", &self.brokers, "host:port of the bootstrap brokers", &mut out);
                need("topic", &self.topic, "the topic to read", &mut out);
                for (f, v) in [
                    ("url", &self.url),
                    ("stream", &self.stream),
                    ("subject", &self.subject),
                    ("connection_string", &self.connection_string),
                    ("key", &self.key),
                ] {
                    refuse(f, v, &mut out);
                }
                for key in self.properties.keys() {
                    if let Some(why) = managed_kafka_property(key) {
                        out.push(format!("properties: `{key}` is set by ingestion ({why}); remove it"));
                    }
                }
            }
            StreamKind::Nats => {
                need("url", &self.url, "the NATS server, nats://host:4222", &mut out);
                need("stream", &self.stream, "the JetStream stream", &mut out);
                for (f, v) in [
                    ("brokers", &self.brokers),
                    ("topic", &self.topic),
                    ("connection_string", &self.connection_string),
                    ("key", &self.key),
                ] {
                    refuse(f, v, &mut out);
                }
            }
            StreamKind::RedisStream => {
                need(
                    "connection_string",
                    &self.connection_string,
                    "the Redis server, as for the online store",
                    &mut out,
                );
                need("key", &self.key, "the stream's key", &mut out);
                for (f, v) in [
                    ("brokers", &self.brokers),
                    ("topic", &self.topic),
                    ("url", &self.url),
                    ("stream", &self.stream),
                    ("subject", &self.subject),
                ] {
                    refuse(f, v, &mut out);
                }
            }
        }
        match (self.dead_letter_target(), self.kind) {
            (DeadLetterTarget::File(f), _) if f.trim().is_empty() => {
                out.push("dead_letter is empty; give a file, or topic:/subject:/stream: and a name".into());
            }
            (DeadLetterTarget::File(_) | DeadLetterTarget::Parquet(_), _)
            | (DeadLetterTarget::Topic(_), StreamKind::Kafka)
            | (DeadLetterTarget::Subject(_), StreamKind::Nats)
            | (DeadLetterTarget::Stream(_), StreamKind::RedisStream) => {}
            (t, kind) => out.push(format!(
                "dead_letter \"{}\" is a {} on the source's broker, which a {kind} source does not have; use {}",
                self.dead_letter_or_default(),
                t.noun(),
                match kind {
                    StreamKind::Kafka => "topic:<name>",
                    StreamKind::Nats => "subject:<name>",
                    StreamKind::RedisStream => "stream:<key>",
                }
            )),
        }
        if let DeadLetterTarget::Topic(n) | DeadLetterTarget::Subject(n) | DeadLetterTarget::Stream(n) =
            self.dead_letter_target()
            && (n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            out.push(format!(
                "dead_letter \"{}\": the name after the colon must be non-empty, without spaces",
                self.dead_letter_or_default()
            ));
        }
        if self.kind != StreamKind::Kafka && !self.properties.is_empty() {
            out.push(format!("`properties` (Kafka client properties) does not apply to a {} source", self.kind));
        }
        if !self.message_format.eq_ignore_ascii_case("json") {
            out.push(format!("message_format \"{}\" is not supported; only json is", self.message_format));
        }
        if self.timestamp_field.trim().is_empty() {
            out.push("timestamp_field is empty; name the record field holding event times".into());
        }
        if let Err(e) = check_name(&self.batch_source) {
            out.push(format!("batch_source: {e}"));
        }
        if self.batch_source == self.name {
            out.push("batch_source names the stream source itself; name the Parquet source holding its events".into());
        }
        if let Some(g) = &self.group
            && (g.is_empty() || g.len() > 200 || g.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            out.push(format!("group \"{g}\" must be 1 to 200 characters without spaces"));
        }
        if self.offline_flush_interval < Duration::from_millis(100) {
            out.push("offline_flush_interval must be at least 100ms".into());
        }
        let mut targets = BTreeSet::new();
        for (from, to) in &self.field_mapping {
            if let Err(e) = check_name(to) {
                out.push(format!("field_mapping {from} -> {to}: {e}"));
            }
            if !targets.insert(to) {
                out.push(format!("field_mapping maps two fields to \"{to}\""));
            }
        }
        out
    }
}

/// Why a Kafka client property cannot be set in `properties`: ingestion
/// sets it, and exactly once in effect depends on its value.
fn managed_kafka_property(key: &str) -> Option<&'static str> {
    match key {
        "group.id" => Some("use `group`"),
        "bootstrap.servers" | "metadata.broker.list" => Some("use `brokers`"),
        "auto.offset.reset" => Some("use `start`"),
        "enable.auto.commit" | "enable.auto.offset.store" | "auto.commit.interval.ms" => {
            Some("offsets are committed only after the writes they cover are durable")
        }
        "isolation.level" => Some("only committed records are read"),
        _ => None,
    }
}

/// Builds a [`StreamSource`]; validation happens in [`StreamSourceBuilder::build`].
#[derive(Debug, Clone)]
pub struct StreamSourceBuilder {
    source: StreamSource,
}

impl StreamSourceBuilder {
    /// Kafka: bootstrap brokers and topic.
    pub fn kafka(mut self, brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        self.source.brokers = Some(brokers.into());
        self.source.topic = Some(topic.into());
        self
    }

    /// NATS: server URL, JetStream stream and optional subject filter.
    pub fn nats(mut self, url: impl Into<String>, stream: impl Into<String>, subject: Option<String>) -> Self {
        self.source.url = Some(url.into());
        self.source.stream = Some(stream.into());
        self.source.subject = subject;
        self
    }

    /// Redis Streams: connection string and stream key.
    pub fn redis(mut self, connection_string: impl Into<String>, key: impl Into<String>) -> Self {
        self.source.connection_string = Some(connection_string.into());
        self.source.key = Some(key.into());
        self
    }

    /// Sets the consumer group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.source.group = Some(group.into());
        self
    }

    /// Sets where a new group starts.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.source.start = start;
        self
    }

    /// Sets the dead-letter file.
    pub fn dead_letter(mut self, path: impl Into<String>) -> Self {
        self.source.dead_letter = Some(path.into());
        self
    }

    /// Sets the unit of epoch-number event times.
    pub fn timestamp_unit(mut self, unit: EpochUnit) -> Self {
        self.source.timestamp_unit = unit;
        self
    }

    /// Renames record field `from` to `to`.
    pub fn map_field(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.source.field_mapping.insert(from.into(), to.into());
        self
    }

    /// Refuses records with fields no view uses.
    pub fn strict(mut self, yes: bool) -> Self {
        self.source.strict = yes;
        self
    }

    /// Sets how long events may wait before the batch source gets them.
    pub fn offline_flush_interval(mut self, every: Duration) -> Self {
        self.source.offline_flush_interval = every;
        self
    }

    /// Kafka: a client property (`security.protocol`, `sasl.username`, ...).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.source.properties.insert(key.into(), value.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.source.description = d.into();
        self
    }

    /// Validates and returns the source.
    pub fn build(self) -> Result<StreamSource> {
        let problems = self.source.check();
        let name = self.source.name.clone();
        built("stream source", &name, self.source, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_needs_its_connection_fields() {
        let s = StreamSource::builder("s", StreamKind::RedisStream, "ts", "events").build().unwrap_err().to_string();
        assert!(s.contains("needs `connection_string`") && s.contains("needs `key`"), "{s}");
        let k = StreamSource::builder("s", StreamKind::Kafka, "ts", "events")
            .kafka("localhost:9092", "t")
            .redis("redis://x", "k")
            .build()
            .unwrap_err()
            .to_string();
        assert!(k.contains("`connection_string` does not apply to a kafka source"), "{k}");
        let ok = StreamSource::builder("s", StreamKind::Nats, "ts", "events")
            .nats("nats://localhost:4222", "EVENTS", None)
            .build()
            .unwrap();
        assert_eq!(ok.group_or_default("p"), "feature-store-p");
        assert_eq!(ok.dead_letter_or_default(), "dead_letter/s.jsonl");
    }

    #[test]
    fn kafka_properties_refuse_what_ingestion_manages() {
        let bad = StreamSource::builder("s", StreamKind::Kafka, "ts", "events")
            .kafka("localhost:9092", "t")
            .property("enable.auto.commit", "true")
            .property("group.id", "g")
            .property("security.protocol", "SASL_SSL")
            .build()
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`enable.auto.commit` is set by ingestion"), "{bad}");
        assert!(bad.contains("`group.id` is set by ingestion (use `group`)"), "{bad}");
        assert!(!bad.contains("security.protocol"), "{bad}");
        let nats = StreamSource::builder("s", StreamKind::Nats, "ts", "events")
            .nats("nats://localhost:4222", "EVENTS", None)
            .property("sasl.username", "u")
            .build()
            .unwrap_err()
            .to_string();
        assert!(nats.contains("`properties` (Kafka client properties) does not apply to a nats source"), "{nats}");
    }

    #[test]
    fn dead_letters_go_to_a_file_or_the_sources_own_broker() {
        let kafka = |dl: &str| {
            StreamSource::builder("s", StreamKind::Kafka, "ts", "events").kafka("localhost:9092", "t").dead_letter(dl)
        };
        assert_eq!(kafka("topic:dead").build().unwrap().dead_letter_target(), DeadLetterTarget::Topic("dead".into()));
        assert_eq!(
            kafka("out/dead.jsonl").build().unwrap().dead_letter_target(),
            DeadLetterTarget::File("out/dead.jsonl".into())
        );
        for parquet in ["out/dead.parquet", "s3://bucket/dead.PARQUET/"] {
            assert_eq!(
                kafka(parquet).build().unwrap().dead_letter_target(),
                DeadLetterTarget::Parquet(parquet.into()),
                "{parquet}"
            );
        }
        let wrong = kafka("stream:dead").build().unwrap_err().to_string();
        assert!(
            wrong.contains("a stream on the source's broker, which a kafka source does not have; use topic:<name>"),
            "{wrong}"
        );
        let empty = kafka("topic:").build().unwrap_err().to_string();
        assert!(empty.contains("the name after the colon must be non-empty"), "{empty}");
        let nats = StreamSource::builder("s", StreamKind::Nats, "ts", "events")
            .nats("nats://localhost:4222", "EVENTS", None)
            .dead_letter("subject:dead.s")
            .build()
            .unwrap();
        assert_eq!(nats.dead_letter_target(), DeadLetterTarget::Subject("dead.s".into()));
    }

    #[test]
    fn yaml_round_trip_keeps_defaults_out() {
        let text = "name: tx\nkind: redis_stream\nconnection_string: ${REDIS}\nkey: tx\ntimestamp_field: ts\nbatch_source: transactions\ntimestamp_unit: ms\noffline_flush_interval: 5s\n";
        let s: StreamSource = yaml_serde::from_str(text).unwrap();
        assert_eq!(s.timestamp_unit, EpochUnit::Millis);
        assert_eq!(s.offline_flush_interval, Duration::from_secs(5));
        let back = yaml_serde::to_string(&s).unwrap();
        assert!(!back.contains("start") && !back.contains("message_format"), "{back}");
        assert_eq!(yaml_serde::from_str::<StreamSource>(&back).unwrap(), s);
    }
}
