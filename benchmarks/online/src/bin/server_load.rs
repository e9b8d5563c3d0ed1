//! `server-load`: a closed-loop load generator for a Feast-compatible feature
//! server on loopback. Each of C workers holds one keep-alive connection
//! (HTTP/1.1 through hyper's connection API, or one HTTP/2 connection per
//! worker for gRPC through tonic's generated `ServingServiceClient`) and sends
//! its next `get-online-features` request as soon as the previous one is
//! answered. Every cell is bounded by time and by a request count.
//!
//! ```text
//! server-load --url http://127.0.0.1:6566 --protocol http|grpc --features v:f0,v:f1,...
//!     [--keys 100000] [--entities 1,100] [--concurrency 1,16,64] [--seconds 3]
//!     [--warmup 0.5] [--max-requests 200000] [--timeout 30] [--threads 2] [--label NAME]
//! ```
//!
//! Before the cells, one request for keys 0, 1 and 2 checks the response's
//! shape (one column per key and feature, three values each, features
//! `PRESENT`). Prints one JSON object per cell on stdout: throughput over the
//! measured window, latency percentiles of the successful requests, and
//! errors by kind (HTTP status, gRPC code, transport, client timeout).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use feature_store_server::proto::serving::get_online_features_request::Kind;
use feature_store_server::proto::serving::serving_service_client::ServingServiceClient;
use feature_store_server::proto::serving::{FeatureList, FieldStatus, GetOnlineFeaturesRequest};
use feature_store_server::proto::types::value::Val;
use feature_store_server::proto::types::{RepeatedValue, Value};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const PATH: &str = "/get-online-features";
/// Distinct requests prepared per cell, cycled through by the workers.
const POOL: usize = 4096;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn list<T: std::str::FromStr>(args: &[String], name: &str, default: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let v = arg(args, name).unwrap_or_else(|| default.to_owned());
    v.split(',').map(|s| s.trim().parse::<T>().with_context(|| format!("{name}: {s}"))).collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Http,
    Grpc,
}

struct Settings {
    url: String,
    authority: String,
    addr: String,
    protocol: Protocol,
    features: Vec<String>,
    keys: i64,
    warmup: Duration,
    seconds: Duration,
    max_requests: u64,
    timeout: Duration,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = arg(&args, "--threads").map_or(Ok(2), |s| s.parse())?;
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(run(args))
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let url = arg(&args, "--url").context("--url http://127.0.0.1:PORT is required")?;
    let authority = url
        .strip_prefix("http://")
        .context("--url must start with http:// (loopback, no TLS)")?
        .trim_end_matches('/')
        .to_owned();
    let protocol = match arg(&args, "--protocol").as_deref() {
        None | Some("http") => Protocol::Http,
        Some("grpc") => Protocol::Grpc,
        Some(p) => bail!("--protocol {p}: use http or grpc"),
    };
    let features: Vec<String> = arg(&args, "--features")
        .context("--features view:feature,... is required")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let secs = |name: &str, default: f64| -> anyhow::Result<Duration> {
        Ok(Duration::from_secs_f64(arg(&args, name).map_or(Ok(default), |s| s.parse())?))
    };
    let settings = Arc::new(Settings {
        url: url.trim_end_matches('/').to_owned(),
        addr: authority.clone(),
        authority,
        protocol,
        features,
        keys: arg(&args, "--keys").map_or(Ok(100_000), |s| s.parse())?,
        warmup: secs("--warmup", 0.5)?,
        seconds: secs("--seconds", 3.0)?,
        max_requests: arg(&args, "--max-requests").map_or(Ok(200_000), |s| s.parse())?,
        timeout: secs("--timeout", 30.0)?,
    });
    let label = arg(&args, "--label").unwrap_or_default();
    let entities: Vec<usize> = list(&args, "--entities", "1,100")?;
    let concurrency: Vec<usize> = list(&args, "--concurrency", "1,16,64")?;

    let check = check(&settings).await;
    if let Err(e) = &check {
        eprintln!("server-load {label}: the check request failed: {e:#}");
    }
    let check = check.map_or_else(|e| format!("{e:#}"), |()| "ok".to_owned());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &n in &entities {
        for &c in &concurrency {
            let pool: Arc<Vec<Vec<i64>>> =
                Arc::new((0..POOL).map(|_| (0..n).map(|_| rng.random_range(0..settings.keys)).collect()).collect());
            let cell = cell(&settings, &pool, c).await?;
            let mut out = serde_json::json!({
                "label": label,
                "protocol": if protocol == Protocol::Http { "http" } else { "grpc" },
                "entities": n,
                "features": settings.features.len(),
                "concurrency": c,
                "check": check,
            });
            if let (Some(o), serde_json::Value::Object(m)) = (out.as_object_mut(), cell) {
                o.extend(m);
            }
            println!("{out}");
        }
    }
    Ok(())
}

/// One connection of a worker.
enum Conn {
    Http(SendRequest<Full<Bytes>>),
    Grpc(ServingServiceClient<Channel>),
}

async fn connect(s: &Settings) -> anyhow::Result<Conn> {
    Ok(match s.protocol {
        Protocol::Http => {
            let stream =
                tokio::net::TcpStream::connect(&s.addr).await.with_context(|| format!("connecting to {}", s.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Conn::Http(sender)
        }
        Protocol::Grpc => {
            let channel = Channel::from_shared(s.url.clone())?.tcp_nodelay(true).connect().await?;
            // Feast's messages for 100 entities x 50 features are far below
            // tonic's 4 MiB default, but do not let the client be the limit.
            Conn::Grpc(ServingServiceClient::new(channel).max_decoding_message_size(usize::MAX))
        }
    })
}

fn http_body(s: &Settings, ids: &[i64]) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({"features": s.features, "entities": {"driver_id": ids}}))
            .expect("JSON of strings and integers"),
    )
}

fn grpc_request(s: &Settings, ids: &[i64]) -> GetOnlineFeaturesRequest {
    let keys = RepeatedValue { val: ids.iter().map(|&k| Value { val: Some(Val::Int64Val(k)) }).collect() };
    GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList { val: s.features.clone() })),
        entities: HashMap::from([("driver_id".to_owned(), keys)]),
        ..Default::default()
    }
}

/// What one request did: the HTTP response body's size in bytes (0 for
/// gRPC), or an error kind.
type Outcome = Result<usize, String>;

/// Sends one request; `Err` also tells whether the connection is to be replaced.
async fn send(s: &Settings, conn: &mut Conn, ids: &[i64], body: &Bytes) -> (Outcome, bool) {
    match conn {
        Conn::Http(sender) => {
            if sender.ready().await.is_err() {
                return (Err("transport".into()), true);
            }
            let req = hyper::Request::post(PATH)
                .header(hyper::header::HOST, &s.authority)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .expect("a valid request");
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(_) => return (Err("transport".into()), true),
            };
            let status = resp.status();
            match resp.into_body().collect().await {
                Ok(b) if status.is_success() => (Ok(b.to_bytes().len()), false),
                Ok(_) => (Err(format!("http_{}", status.as_u16())), false),
                Err(_) => (Err("transport".into()), true),
            }
        }
        Conn::Grpc(client) => match client.get_online_features(grpc_request(s, ids)).await {
            Ok(_) => (Ok(0), false),
            Err(st) if st.code() == tonic::Code::Unavailable || st.code() == tonic::Code::Unknown => {
                (Err(format!("grpc_{:?}", st.code())), true)
            }
            Err(st) => (Err(format!("grpc_{:?}", st.code())), false),
        },
    }
}

/// One request for keys 0, 1 and 2: the response has a column per key and
/// feature, three values in each, and every feature value is PRESENT.
async fn check(s: &Settings) -> anyhow::Result<()> {
    let ids = [0i64, 1, 2];
    let want_columns = s.features.len() + 1;
    match connect(s).await? {
        Conn::Http(mut sender) => {
            let req = hyper::Request::post(PATH)
                .header(hyper::header::HOST, &s.authority)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(http_body(s, &ids)))?;
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let names = v["metadata"]["feature_names"].as_array().context("no metadata.feature_names")?;
            let results = v["results"].as_array().context("no results")?;
            if names.len() != want_columns || results.len() != want_columns {
                bail!("{} names and {} results, expected {want_columns}", names.len(), results.len());
            }
            for (i, r) in results.iter().enumerate() {
                let values = r["values"].as_array().context("no values")?;
                let statuses = r["statuses"].as_array().context("no statuses")?;
                if values.len() != ids.len() || statuses.len() != ids.len() {
                    bail!("column {i}: {} values, {} statuses", values.len(), statuses.len());
                }
                if i > 0 && statuses.iter().any(|x| x != "PRESENT") {
                    bail!("column {i} ({}): statuses {statuses:?}", names[i]);
                }
            }
        }
        Conn::Grpc(mut client) => {
            let r = client.get_online_features(grpc_request(s, &ids)).await?.into_inner();
            let names = r.metadata.and_then(|m| m.feature_names).map_or(0, |f| f.val.len());
            if names != want_columns || r.results.len() != want_columns {
                bail!("{names} names and {} results, expected {want_columns}", r.results.len());
            }
            for (i, col) in r.results.iter().enumerate() {
                if col.values.len() != ids.len() || col.statuses.len() != ids.len() {
                    bail!("column {i}: {} values, {} statuses", col.values.len(), col.statuses.len());
                }
                if i > 0 && col.statuses.iter().any(|&x| x != FieldStatus::Present as i32) {
                    bail!("column {i}: statuses {:?}", col.statuses);
                }
            }
        }
    }
    Ok(())
}

struct Worker {
    latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    last_done: Option<Instant>,
    response_bytes: u64,
}

async fn cell(s: &Arc<Settings>, pool: &Arc<Vec<Vec<i64>>>, concurrency: usize) -> anyhow::Result<serde_json::Value> {
    let bodies: Arc<Vec<Bytes>> = Arc::new(match s.protocol {
        Protocol::Http => pool.iter().map(|ids| http_body(s, ids)).collect(),
        Protocol::Grpc => Vec::new(),
    });
    // Every connection is open before the clock starts.
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        conns.push(connect(s).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let measure_from = begin + s.warmup;
    let until = measure_from + s.seconds;
    let mut handles = Vec::with_capacity(concurrency);
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (s, pool, bodies, issued) = (Arc::clone(s), Arc::clone(pool), Arc::clone(&bodies), Arc::clone(&issued));
        handles.push(tokio::spawn(async move {
            let mut out = Worker {
                latencies: Vec::with_capacity(1 << 16),
                errors: BTreeMap::new(),
                last_done: None,
                response_bytes: 0,
            };
            // Workers start at different places in the pool.
            let mut i = w * (POOL / concurrency.max(1));
            let empty = Bytes::new();
            loop {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let measured = started >= measure_from;
                if measured && issued.fetch_add(1, Ordering::Relaxed) >= s.max_requests {
                    break;
                }
                let ids = &pool[i % POOL];
                let body = bodies.get(i % POOL).unwrap_or(&empty);
                i += 1;
                let (outcome, reconnect) = match tokio::time::timeout(s.timeout, send(&s, &mut conn, ids, body)).await {
                    Ok(r) => r,
                    Err(_) => (Err("client_timeout".into()), true),
                };
                let done = Instant::now();
                if measured {
                    out.last_done = Some(done);
                    match outcome {
                        Ok(bytes) => {
                            out.latencies.push(u64::try_from((done - started).as_nanos()).unwrap_or(u64::MAX));
                            out.response_bytes += bytes as u64;
                        }
                        Err(kind) => *out.errors.entry(kind).or_default() += 1,
                    }
                } else if let Err(kind) = outcome {
                    *out.errors.entry(format!("warmup_{kind}")).or_default() += 1;
                }
                if reconnect {
                    match connect(&s).await {
                        Ok(c) => conn = c,
                        Err(_) => {
                            *out.errors.entry("connect".into()).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            out
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut last = measure_from;
    let mut response_bytes = 0u64;
    for h in handles {
        let w = h.await?;
        latencies.extend(w.latencies);
        for (k, n) in w.errors {
            *errors.entry(k).or_default() += n;
        }
        if let Some(t) = w.last_done {
            last = last.max(t);
        }
        response_bytes += w.response_bytes;
    }
    latencies.sort_unstable();
    let window = (last - measure_from).as_secs_f64().max(1e-9);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        // Nearest rank: the smallest latency at or above a fraction p of all.
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1] as f64 / 1e3
    };
    let ok = latencies.len() as u64;
    let measured_errors: u64 = errors.iter().filter(|(k, _)| !k.starts_with("warmup_")).map(|(_, n)| n).sum();
    let mean = if ok == 0 { f64::NAN } else { latencies.iter().sum::<u64>() as f64 / ok as f64 / 1e3 };
    Ok(serde_json::json!({
        "seconds": window,
        "ok": ok,
        "errors": measured_errors,
        "error_kinds": errors,
        "rps": ok as f64 / window,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "max_us": latencies.last().map_or(f64::NAN, |&x| x as f64 / 1e3),
        "mean_us": mean,
        "http_response_bytes": if ok == 0 || response_bytes == 0 { None } else { Some(response_bytes / ok) },
    }))
}
