//! Prometheus metrics in the text exposition format: fixed label sets held
//! in atomics, so recording a request takes no lock.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use feature_store_core::online::FeatureStatus;

/// Endpoints with their own series; anything else is `other`.
pub(crate) const ENDPOINTS: [&str; 12] = [
    "/get-online-features",
    "/push",
    "/write-to-online-store",
    "/materialize",
    "/materialize-incremental",
    "/health",
    "/ready",
    "/metrics",
    "/feast.serving.ServingService/GetOnlineFeatures",
    "/feast.serving.ServingService/GetFeastServingInfo",
    "grpc.health",
    "other",
];

/// Latency histogram bounds in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Status classes counted per endpoint.
const CODES: [u16; 13] = [200, 202, 400, 401, 403, 404, 405, 409, 413, 422, 500, 503, 504];

const STATUSES: [FeatureStatus; 4] =
    [FeatureStatus::Present, FeatureStatus::NullValue, FeatureStatus::NotFound, FeatureStatus::OutsideMaxAge];

#[derive(Default)]
struct EndpointSeries {
    /// Per entry of [`CODES`], plus one for any other code.
    by_code: [AtomicU64; CODES.len() + 1],
    /// Cumulative counts per bucket, plus `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Every series the server exports.
pub(crate) struct Metrics {
    endpoints: [EndpointSeries; ENDPOINTS.len()],
    in_flight: AtomicU64,
    rejected_overload: AtomicU64,
    entities: AtomicU64,
    /// Statuses per feature view; views are few and change only on apply.
    statuses: RwLock<BTreeMap<String, [AtomicU64; 4]>>,
    /// Store errors by store (`online`, `offline`, `registry`).
    store_errors: [AtomicU64; 3],
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            endpoints: Default::default(),
            in_flight: AtomicU64::new(0),
            rejected_overload: AtomicU64::new(0),
            entities: AtomicU64::new(0),
            statuses: RwLock::new(BTreeMap::new()),
            store_errors: Default::default(),
        }
    }

    pub(crate) fn endpoint_index(path: &str) -> usize {
        if path.starts_with("/grpc.health.") {
            return ENDPOINTS.len() - 2;
        }
        ENDPOINTS.iter().position(|e| *e == path).unwrap_or(ENDPOINTS.len() - 1)
    }

    pub(crate) fn record(&self, endpoint: usize, code: u16, elapsed: Duration) {
        let s = &self.endpoints[endpoint];
        let c = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len());
        s.by_code[c].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let b = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        s.buckets[b].fetch_add(1, Ordering::Relaxed);
        s.sum_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> &AtomicU64 {
        &self.in_flight
    }

    pub(crate) fn overloaded(&self) {
        self.rejected_overload.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn entities(&self, n: usize) {
        self.entities.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn store_error(&self, store: StoreKind) {
        self.store_errors[store as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the statuses of one response, per feature view: a view's
    /// columns are adjacent, so each view takes one map lookup.
    pub(crate) fn statuses(&self, response: &feature_store_core::online::OnlineResponse) {
        let features = response.values().num_columns() - response.key_column_count();
        let mut i = 0;
        while i < features {
            let Some(view) = response.feature_view(i) else {
                i += 1;
                continue;
            };
            let mut counts = [0u64; 4];
            while i < features && response.feature_view(i) == Some(view) {
                for s in response.feature_statuses(i) {
                    counts[STATUSES.iter().position(|x| x == s).unwrap_or(0)] += 1;
                }
                i += 1;
            }
            let add = |series: &[AtomicU64; 4]| {
                for (a, n) in series.iter().zip(counts) {
                    if n > 0 {
                        a.fetch_add(n, Ordering::Relaxed);
                    }
                }
            };
            {
                let map = self.statuses.read().unwrap_or_else(|p| p.into_inner());
                if let Some(series) = map.get(view) {
                    add(series);
                    continue;
                }
            }
            let mut map = self.statuses.write().unwrap_or_else(|p| p.into_inner());
            add(map.entry(view.to_owned()).or_default());
        }
    }

    /// The exposition text; `registry` adds the registry's state.
    pub(crate) fn render(&self, registry_version: Option<u64>, registry_failing: bool) -> String {
        let mut out = String::with_capacity(8192);
        let _ = writeln!(out, "# HELP feature_server_requests_total Requests answered, by endpoint and HTTP status.");
        let _ = writeln!(out, "# TYPE feature_server_requests_total counter");
        for (e, s) in ENDPOINTS.iter().zip(&self.endpoints) {
            for (i, c) in s.by_code.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let code = CODES.get(i).map_or_else(|| "other".to_owned(), u16::to_string);
                let _ = writeln!(out, "feature_server_requests_total{{endpoint=\"{e}\",code=\"{code}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP feature_server_request_duration_seconds Time to answer a request, by endpoint.");
        let _ = writeln!(out, "# TYPE feature_server_request_duration_seconds histogram");
        for (e, s) in ENDPOINTS.iter().zip(&self.endpoints) {
            let count: u64 = s.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, b) in s.buckets.iter().enumerate() {
                cumulative += b.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map_or_else(|| "+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "feature_server_request_duration_seconds_bucket{{endpoint=\"{e}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "feature_server_request_duration_seconds_sum{{endpoint=\"{e}\"}} {sum}");
            let _ = writeln!(out, "feature_server_request_duration_seconds_count{{endpoint=\"{e}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP feature_server_feature_statuses_total Feature values served, by feature view and status."
        );
        let _ = writeln!(out, "# TYPE feature_server_feature_statuses_total counter");
        for (view, series) in self.statuses.read().unwrap_or_else(|p| p.into_inner()).iter() {
            for (s, n) in STATUSES.iter().zip(series) {
                let _ = writeln!(
                    out,
                    "feature_server_feature_statuses_total{{feature_view=\"{}\",status=\"{}\"}} {}",
                    escape(view),
                    s.as_str(),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP feature_server_store_errors_total Store failures seen by requests, by store.");
        let _ = writeln!(out, "# TYPE feature_server_store_errors_total counter");
        for (i, name) in ["online", "offline", "registry"].iter().enumerate() {
            let _ = writeln!(
                out,
                "feature_server_store_errors_total{{store=\"{name}\"}} {}",
                self.store_errors[i].load(Ordering::Relaxed)
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            &mut out,
            "feature_server_in_flight_requests",
            "Requests being served.",
            "gauge",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "feature_server_rejected_overload_total",
            "Requests refused with 503 because max_concurrency were in flight.",
            "counter",
            self.rejected_overload.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "feature_server_online_entities_total",
            "Entity rows asked for by online reads.",
            "counter",
            self.entities.load(Ordering::Relaxed),
        );
        if let Some(v) = registry_version {
            gauge(&mut out, "feature_server_registry_version", "Registry version being served.", "gauge", v);
        }
        gauge(
            &mut out,
            "feature_server_registry_stale",
            "1 when the last registry re-read failed and the last good version is served.",
            "gauge",
            u64::from(registry_failing),
        );
        out
    }
}

/// Which store an error came from.
#[derive(Clone, Copy)]
pub(crate) enum StoreKind {
    Online = 0,
    Offline = 1,
    Registry = 2,
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
