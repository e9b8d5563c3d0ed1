//! Hostile-input tests: every parser and decoder fed mutated and random
//! inputs. Each must return (a value or an error), never panic, and stay
//! fast. Mutational, seeded and repeatable, not coverage-guided: the
//! iteration counts are printed (`cargo test -p feature-store-core --lib
//! robustness -- --nocapture`), and `FS_FUZZ_ITERATIONS` runs longer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that parsers treat specially, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b":",
    b"- ",
    b"\n",
    b"  ",
    b"\t",
    b"'",
    b"\"",
    b"&a",
    b"*a",
    b"!!binary",
    b"#",
    b",",
    b"null",
    b"~",
    b"1e309",
    b"-0",
    b"9223372036854775808",
    b"\\u0000",
    b"\xff",
    b"\xc3",
    b"${X}",
    b"%",
    b"@",
    b"@",
    b"=",
    b"://",
    b"s",
    b"ms",
    b"d",
    b"1",
    b"-1",
];

fn mutate(rng: &mut Rng, seed: &[u8], corpus: &[&[u8]]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(6) {
            0 if !out.is_empty() => {
                let at = at.min(out.len() - 1);
                out[at] = rng.next() as u8;
            }
            1 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, t.iter().copied());
            }
            3 => {
                // Splice a piece of another corpus entry.
                let other = corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let to = (from + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            4 if !out.is_empty() => {
                // Repeat a piece (deep nesting, long runs).
                let end = (at + 1 + rng.below(8)).min(out.len());
                let piece = out[at.min(end - 1)..end].to_vec();
                for _ in 0..rng.below(200) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let n = rng.below(8);
                for _ in 0..n {
                    out.insert(at.min(out.len()), rng.next() as u8);
                }
            }
        }
    }
    out
}

fn iterations(default: usize) -> usize {
    std::env::var("FS_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `target` on mutations of `corpus`; panics with the input that
/// panicked or took longer than `slow`.
fn fuzz(name: &str, corpus: &[&[u8]], runs: usize, slow: Duration, target: impl Fn(&[u8])) {
    let mut rng = Rng(0x5eed ^ (name.len() as u64 * 0x9e37_79b9));
    let began = Instant::now();
    for i in 0..runs {
        let seed = corpus[i % corpus.len()];
        let input = if i < corpus.len() { seed.to_vec() } else { mutate(&mut rng, seed, corpus) };
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = started.elapsed();
        assert!(result.is_ok(), "{name}: panicked on input {:?}", String::from_utf8_lossy(&input));
        assert!(
            took < slow,
            "{name}: {took:?} on input of {} bytes: {:?}",
            input.len(),
            String::from_utf8_lossy(&input)
        );
    }
    println!("robustness {name}: {runs} inputs in {:.1?}", began.elapsed());
}

const DEFINITIONS: &[u8] = br#"
entities:
  - {name: driver, join_keys: [driver_id], description: "A driver"}
sources:
  - name: stats
    path: data/stats/
    timestamp_field: event_timestamp
    created_timestamp_field: created
    field_mapping: {conv: conv_rate}
feature_views:
  - name: driver_hourly_stats
    entities: [driver]
    source: stats
    ttl: 1d
    tags: {team: ml}
    schema:
      - {name: conv_rate, dtype: float32}
      - {name: trips, dtype: int64}
      - {name: tags, dtype: "array<string>"}
    validation:
      ranges: {conv_rate: [0.0, 1.0]}
      max_null_fraction: {"*": 0.1}
  - name: user_txn
    entities: [driver]
    source: stats
    aggregation_interval: 5m
    aggregations:
      - {column: trips, function: sum, window: 1h}
      - {column: trips, function: last_n, n: 3, window: 1d}
feature_services:
  - {name: svc, features: ["driver_hourly_stats:conv_rate", user_txn]}
"#;

const CONFIG: &[u8] = b"project: demo\nregistry: data/registry.json\nonline_store:\n  type: redis\n  connection_string: \"localhost:6379,password=p@ss,ssl=true\"\n  key_ttl_seconds: 3600\noffline_store:\n  memory_limit: 1GiB\n  storage_options: {aws_region: us-east-1}\n";

#[test]
fn definitions_yaml() {
    let runs = iterations(20_000);
    fuzz(
        "definitions yaml",
        &[DEFINITIONS, b"feature_views: []\n", b"[1, {a: b}]"],
        runs,
        Duration::from_secs(2),
        |b| {
            let _ = crate::repo::Definitions::from_yaml(&String::from_utf8_lossy(b), "fuzz.yaml");
        },
    );
}

#[test]
fn config_yaml() {
    let runs = iterations(20_000);
    fuzz("feature_store.yaml", &[CONFIG], runs, Duration::from_secs(2), |b| {
        let _ = crate::repo::RepoConfig::from_yaml(&String::from_utf8_lossy(b), "feature_store.yaml");
    });
}

#[test]
fn durations_sizes_and_references() {
    let corpus: &[&[u8]] = &[b"1d", b"90m", b"1h30m", b"0s", b"2.5s", b"1GiB", b"512MiB", b"view:feature", b"v"];
    fuzz("durations, sizes, feature references", corpus, iterations(100_000), Duration::from_millis(200), |b| {
        let s = String::from_utf8_lossy(b);
        let _ = crate::duration::parse_duration(&s);
        let _ = crate::repo::parse_size(&s);
        let _ = s.parse::<crate::model::FeatureRef>();
    });
}

#[test]
fn online_records_and_values() {
    use crate::ValueType;
    let mut record = Vec::new();
    let fields = [("a", &b"\x03abc"[..]), ("conv_rate", &[4u8, 0, 0, 128, 63][..]), ("n", &[6u8; 9][..])];
    crate::online::codec::encode_record(fields.into_iter(), &mut record);
    let corpus: &[&[u8]] = &[&record, b"", &[0xff; 12]];
    let wanted: Vec<String> = ["a", "conv_rate", "n", "missing"].iter().map(|s| (*s).to_owned()).collect();
    let types = [
        ValueType::Int64,
        ValueType::Float32,
        ValueType::String,
        ValueType::Bool,
        ValueType::Bytes,
        ValueType::Timestamp,
        ValueType::List(Box::new(ValueType::Float64)),
        ValueType::List(Box::new(ValueType::String)),
    ];
    fuzz("online records and values", corpus, iterations(100_000), Duration::from_millis(200), |b| {
        if let Ok(values) = crate::online::codec::decode_record(b, &wanted) {
            for v in values.into_iter().flatten() {
                for t in &types {
                    let mut d = crate::online::codec::ValueDecoder::new(t, 1);
                    let _ = d.append(&v, "f");
                    let _ = d.finish();
                }
            }
        }
        for t in &types {
            let mut d = crate::online::codec::ValueDecoder::new(t, 1);
            let _ = d.append(b, "f");
            let _ = d.finish();
        }
        let _ = crate::aggregation::AggState::decode(b);
    });
}

#[test]
fn registry_documents() {
    let doc = crate::registry::RegistryDocument { version: 7, ..Default::default() }.to_json();
    let full = br#"{"format_version":1,"version":3,"updated_at":"2026-01-01T00:00:00Z","projects":{"demo":{"entities":{"driver":{"spec":{"name":"driver","join_keys":["driver_id"]},"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","generation":2}},"view_state":{"v":{"watermark":"2026-01-01T00:00:00Z","runs":[]}},"orphaned_online":["v@1"]}}}"#;
    fuzz("registry documents", &[&doc, full], iterations(30_000), Duration::from_secs(1), |b| {
        let _ = crate::registry::RegistryDocument::from_json(b, "fuzz.json");
    });
}
