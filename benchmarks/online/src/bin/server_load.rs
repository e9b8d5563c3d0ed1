//! `server-load`: a closed-loop load generator for a Feast-compatible feature
//! server on loopback. Each of C workers holds one keep-alive connection
//! (HTTP/1.1 through hyper's connection API, or for gRPC one HTTP/2
//! connection driven by tonic's generated `ServingServiceClient`) and sends
//! its next `get-online-features` request as soon as the previous one is
//! answered. Every cell is bounded by time and by a request count.
//!
//! ```text
//! server-load --url http://127.0.0.1:6566 --protocol http|grpc --features v:f0,v:f1,...
//!     [--keys 100000] [--entities 1,100] [--concurrency 1,16,64] [--seconds 3]
//!     [--warmup 0.5] [--max-requests 200000] [--timeout 30] [--threads 2] [--label NAME]
//!     [--server-pid PID] [--redis-pid PID] [--grpc-client generated|raw] [--grpc-transport h2|channel]
//! ```
//!
//! HTTP requests are serialized before the clock starts and responses are
//! read in full but not parsed. gRPC goes through tonic's generated
//! `ServingServiceClient` by default, which encodes each request and
//! decodes each response into Feast's messages as a real client does;
//! `--grpc-client raw` sends pre-encoded requests through tonic's
//! `client::Grpc` on the same connection and reads each response's bytes
//! without decoding them, as the HTTP side does, so less of the two cores
//! goes to the load generator. The HTTP/2 connection is hyper's, called
//! directly (`--grpc-transport h2`, the default), or tonic's `Channel`,
//! which puts a buffer task between caller and connection (in one trial at
//! one entity and concurrency 16, 61 against 45 µs of client CPU a request).
//!
//! With `--server-pid` (and `--redis-pid`), each cell also reports the CPU
//! time that process and its descendants (Feast's gunicorn workers) used
//! over the measured window, per successful request, from `/proc` (Linux;
//! 100 clock ticks a second assumed), and the load generator's own.
//!
//! Before the cells, one request for keys 0, 1 and 2 checks the response's
//! shape (one column per key and feature, three values each, features
//! `PRESENT`). Prints one JSON object per cell on stdout: throughput over the
//! measured window, latency percentiles of the successful requests, and
//! errors by kind (HTTP status, gRPC code, transport, client timeout).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut};
use feature_store_server::proto::serving::get_online_features_request::Kind;
use feature_store_server::proto::serving::serving_service_client::ServingServiceClient;
use feature_store_server::proto::serving::{FeatureList, FieldStatus, GetOnlineFeaturesRequest};
use feature_store_server::proto::types::value::Val;
use feature_store_server::proto::types::{RepeatedValue, Value};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

const PATH: &str = "/get-online-features";
const GRPC_PATH: &str = "/feast.serving.ServingService/GetOnlineFeatures";
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
    /// gRPC with pre-encoded requests and responses read but not decoded.
    GrpcRaw,
}

#[derive(Clone)]
struct Settings {
    url: String,
    /// `host:port`, for connecting and the HTTP/1.1 Host header.
    authority: String,
    protocol: Protocol,
    features: Vec<String>,
    keys: i64,
    warmup: Duration,
    seconds: Duration,
    max_requests: u64,
    timeout: Duration,
    server_pid: Option<u32>,
    redis_pid: Option<u32>,
    grpc_h2: bool,
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
        Some("grpc") => match arg(&args, "--grpc-client").as_deref() {
            None | Some("generated") => Protocol::Grpc,
            Some("raw") => Protocol::GrpcRaw,
            Some(c) => bail!("--grpc-client {c}: use generated or raw"),
        },
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
        authority,
        protocol,
        features,
        keys: arg(&args, "--keys").map_or(Ok(100_000), |s| s.parse())?,
        warmup: secs("--warmup", 0.5)?,
        seconds: secs("--seconds", 3.0)?,
        max_requests: arg(&args, "--max-requests").map_or(Ok(200_000), |s| s.parse())?,
        timeout: secs("--timeout", 30.0)?,
        server_pid: arg(&args, "--server-pid").map(|s| s.parse()).transpose()?,
        redis_pid: arg(&args, "--redis-pid").map(|s| s.parse()).transpose()?,
        grpc_h2: match arg(&args, "--grpc-transport").as_deref() {
            None | Some("h2") => true,
            Some("channel") => false,
            Some(t) => bail!("--grpc-transport {t}: use h2 or channel"),
        },
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
                "grpc_client": match protocol {
                    Protocol::Http => None,
                    Protocol::Grpc => Some("generated"),
                    Protocol::GrpcRaw => Some("raw"),
                },
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
    Grpc(ServingServiceClient<GrpcConn>),
    GrpcRaw(tonic::client::Grpc<GrpcConn>),
}

/// One HTTP/2 connection for tonic's clients: tonic's own `Channel`, or
/// hyper's HTTP/2 connection called directly (no buffer task between the
/// caller and the connection, so fewer thread hand-offs per request).
#[derive(Clone)]
enum GrpcConn {
    Channel(Channel),
    H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<tonic::codegen::http::Request<tonic::body::Body>> for GrpcConn {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::codegen::StdError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            GrpcConn::Channel(c) => Service::poll_ready(c, cx).map_err(Into::into),
            GrpcConn::H2(h) => h.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            GrpcConn::Channel(c) => {
                let f = Service::call(c, req);
                Box::pin(async move { f.await.map(|r| r.map(tonic::body::Body::new)).map_err(Into::into) })
            }
            GrpcConn::H2(h) => {
                let f = h.send_request(req);
                Box::pin(async move { f.await.map(|r| r.map(tonic::body::Body::new)).map_err(Into::into) })
            }
        }
    }
}

async fn connect(s: &Settings) -> anyhow::Result<Conn> {
    Ok(match s.protocol {
        Protocol::Http => {
            let stream = tokio::net::TcpStream::connect(&s.authority)
                .await
                .with_context(|| format!("connecting to {}", s.authority))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Conn::Http(sender)
        }
        Protocol::Grpc | Protocol::GrpcRaw => {
            let channel = if s.grpc_h2 {
                let stream = tokio::net::TcpStream::connect(&s.authority)
                    .await
                    .with_context(|| format!("connecting to {}", s.authority))?;
                stream.set_nodelay(true)?;
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                GrpcConn::H2(sender)
            } else {
                GrpcConn::Channel(Channel::from_shared(s.url.clone())?.tcp_nodelay(true).connect().await?)
            };
            let origin: tonic::codegen::http::Uri = s.url.parse()?;
            // Responses for 100 entities x 50 features are far below tonic's
            // 4 MiB default, but do not let the client be the limit.
            if s.protocol == Protocol::Grpc {
                Conn::Grpc(ServingServiceClient::with_origin(channel, origin).max_decoding_message_size(usize::MAX))
            } else {
                Conn::GrpcRaw(tonic::client::Grpc::with_origin(channel, origin).max_decoding_message_size(usize::MAX))
            }
        }
    })
}

/// Sends pre-encoded messages and reads replies as bytes, undecoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = usize;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = usize;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Self::Error> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(n))
    }
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

/// What one request did: the response body's or message's size in bytes (0
/// when decoded by the generated client), or an error kind.
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
            Err(st) => grpc_error(&st),
        },
        Conn::GrpcRaw(grpc) => {
            if grpc.ready().await.is_err() {
                return (Err("transport".into()), true);
            }
            let path = PathAndQuery::from_static(GRPC_PATH);
            match grpc.unary(tonic::Request::new(body.clone()), path, RawCodec).await {
                Ok(r) => (Ok(r.into_inner()), false),
                Err(st) => grpc_error(&st),
            }
        }
    }
}

fn grpc_error(st: &tonic::Status) -> (Outcome, bool) {
    let reconnect = matches!(st.code(), tonic::Code::Unavailable | tonic::Code::Unknown);
    (Err(format!("grpc_{:?}", st.code())), reconnect)
}

/// One request for keys 0, 1 and 2: the response has a column per key and
/// feature, three values in each, and every feature value is PRESENT.
async fn check(s: &Settings) -> anyhow::Result<()> {
    let ids = [0i64, 1, 2];
    let want_columns = s.features.len() + 1;
    let conn = match connect(s).await? {
        Conn::GrpcRaw(_) => connect(&Settings { protocol: Protocol::Grpc, ..s.clone() }).await?,
        c => c,
    };
    match conn {
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
        Conn::GrpcRaw(_) => unreachable!("checked with the generated client"),
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
        Protocol::GrpcRaw => pool.iter().map(|ids| Bytes::from(grpc_request(s, ids).encode_to_vec())).collect(),
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
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = cpu_seconds(s);
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
    let cpu_after = cpu_seconds(s);
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
    let per_request = |i: usize| -> Option<f64> {
        let (a, b) = (cpu_before[i]?, cpu_after[i]?);
        (ok > 0).then(|| (b - a) / ok as f64 * 1e6)
    };
    // Cores kept busy over the window: by this benchmark's processes, and by everything.
    let busy = |idx: &[usize]| -> Option<f64> {
        idx.iter().map(|&i| Some(cpu_after[i]? - cpu_before[i]?)).sum::<Option<f64>>().map(|c| c / window)
    };
    let (cores_benchmark, cores_machine) = (busy(&[0, 1, 2]), busy(&[3]));
    Ok(serde_json::json!({
        "cores_busy_benchmark": cores_benchmark,
        "cores_busy_machine": cores_machine,
        "server_cpu_us_per_request": per_request(0),
        "redis_cpu_us_per_request": per_request(1),
        "client_cpu_us_per_request": per_request(2),
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
        "response_bytes": if ok == 0 || response_bytes == 0 { None } else { Some(response_bytes / ok) },
    }))
}

/// CPU seconds (user + system) of the server and its descendants, of Redis,
/// of this process, and of the whole machine (busy: not idle or waiting on
/// I/O), as far as they are known.
fn cpu_seconds(s: &Settings) -> [Option<f64>; 4] {
    let procs = processes();
    let tree = |root: Option<u32>| -> Option<f64> {
        let root = root?;
        let mut total = 0u64;
        let mut found = false;
        let mut stack = vec![root];
        while let Some(p) = stack.pop() {
            if let Some((_, ticks)) = procs.get(&p) {
                found = true;
                total += ticks;
            }
            stack.extend(procs.iter().filter(|(_, (ppid, _))| *ppid == p).map(|(pid, _)| *pid));
        }
        found.then(|| total as f64 / 100.0)
    };
    let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
        // cpu  user nice system idle iowait irq softirq steal ...
        let line = stat.lines().next()?;
        let t: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let all: u64 = t.iter().take(8).sum();
        Some((all - t.get(3)? - t.get(4)?) as f64 / 100.0)
    });
    [tree(s.server_pid), tree(s.redis_pid), tree(Some(std::process::id())), machine]
}

/// Every process's parent and CPU clock ticks (utime + stime), from /proc.
fn processes() -> HashMap<u32, (u32, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is the state (field 3); ppid is field 4, utime 14, stime 15.
        let (Some(ppid), Some(ut), Some(st)) = (f.get(1), f.get(11), f.get(12)) else { continue };
        if let (Ok(ppid), Ok(ut), Ok(st)) = (ppid.parse(), ut.parse::<u64>(), st.parse::<u64>()) {
            out.insert(pid, (ppid, ut + st));
        }
    }
    out
}
