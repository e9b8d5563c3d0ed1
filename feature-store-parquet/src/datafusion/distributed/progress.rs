//! A cluster job's progress, read from the scheduler's REST API (served on
//! its gRPC port by `feature-store cluster scheduler`): the job's id and
//! address once it is known, then stages and tasks done, rows shuffled and
//! bytes fetched from other executors whenever they change, as `tracing` events of target
//! `feature_store::cluster_progress` (the CLI shows them on stderr).
//!
//! Ballista's client does not return the job id, so the job is found by its
//! name, which the client sets to the session's unique name. A scheduler
//! without the REST API (a stock one) means no progress, nothing worse.
//!
//! The watcher also notices a stalled job: Ballista 55's scheduler can
//! leave a job unfinished with no task running after an executor is lost
//! mid-job (stages rolled back, never resubmitted). A job with no running
//! task and no change for [`stall_timeout`] is cancelled and reported, so
//! the caller fails with an error instead of waiting forever.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a job may sit with no running task and no change before it is
/// called stalled: `FEATURE_STORE_CLUSTER_STALL_SECONDS`, default 300 (raise
/// it on a cluster shared with long jobs, where a job may wait for slots).
pub(crate) fn stall_timeout() -> Duration {
    let seconds = std::env::var("FEATURE_STORE_CLUSTER_STALL_SECONDS").ok().and_then(|s| s.parse::<u64>().ok());
    Duration::from_secs(seconds.unwrap_or(300).max(1))
}

/// Polls the scheduler at `host:port` for the job named `job_name` until it
/// ends; reports through `tracing`. Returns why the job was cancelled when it
/// stalled (see the module's notes), `None` otherwise.
pub(crate) async fn watch(host: String, port: u16, job_name: String, stall: Duration) -> Option<String> {
    let base = format!("http://{host}:{port}");
    let mut job: Option<String> = None;
    let mut last: Option<Progress> = None;
    let mut failures = 0;
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(if job.is_none() { 200 } else { 1000 })).await;
        let id = match &job {
            Some(id) => id.clone(),
            None => match find_job(&host, port, &job_name).await {
                Ok(Some(id)) => {
                    tracing::info!(
                        target: "feature_store::cluster_progress",
                        job = %id,
                        status = %format!("{base}/api/job/{id}"),
                        stages = %format!("{base}/api/job/{id}/stages"),
                        "cluster job submitted"
                    );
                    job = Some(id.clone());
                    id
                }
                Ok(None) => continue,
                Err(e) => {
                    failures += 1;
                    if failures == 3 {
                        tracing::debug!(scheduler = %base, error = %e, "no progress: the scheduler's REST API does not answer");
                        return None;
                    }
                    continue;
                }
            },
        };
        let progress = match stages(&host, port, &id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(job = %id, error = %e, "progress: cannot read the job's stages");
                return None;
            }
        };
        if last.as_ref() != Some(&progress) {
            tracing::info!(
                target: "feature_store::cluster_progress",
                job = %id,
                stages_done = progress.stages_done,
                stages = progress.stages,
                tasks_done = progress.tasks_done,
                tasks = progress.tasks,
                rows_shuffled = progress.rows_shuffled,
                bytes_shuffled = progress.bytes_shuffled,
                "cluster job progress"
            );
        }
        let finished = progress.stages > 0 && progress.stages_done == progress.stages || progress.failed;
        if finished {
            return None;
        }
        if progress.running > 0 || last.as_ref() != Some(&progress) {
            idle_since = None;
        } else {
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= stall {
                let cancelled = cancel(&host, port, &id).await;
                let message = format!(
                    "job {id} stalled: no task ran and nothing changed for {} s ({} of {} stages done); an \
                     executor was probably lost mid-job and the scheduler did not resubmit its work; the job {}, \
                     nothing was written: run it again (FEATURE_STORE_CLUSTER_STALL_SECONDS sets this wait)",
                    stall.as_secs(),
                    progress.stages_done,
                    progress.stages,
                    if cancelled { "was cancelled" } else { "could not be cancelled" },
                );
                tracing::warn!(target: "feature_store::cluster_progress", job = %id, "{message}");
                return Some(message);
            }
        }
        last = Some(progress);
    }
}

/// Asks the scheduler to cancel job `job` (`PATCH /api/job/{id}`).
async fn cancel(host: &str, port: u16, job: &str) -> bool {
    request(host, port, "PATCH", &format!("/api/job/{job}")).await.is_ok_and(|(status, _)| status.starts_with('2'))
}

/// Reports the finished job named `job_name` once: its stages, tasks, rows
/// and bytes shuffled (nothing when the scheduler has no REST API).
pub(crate) async fn report_finished(host: &str, port: u16, job_name: &str) {
    let Ok(Some(id)) = find_job(host, port, job_name).await else { return };
    if let Ok(p) = stages(host, port, &id).await {
        tracing::info!(
            target: "feature_store::cluster_progress",
            job = %id,
            status = %format!("http://{host}:{port}/api/job/{id}"),
            stages = p.stages,
            tasks = p.tasks,
            rows_shuffled = p.rows_shuffled,
            bytes_shuffled = p.bytes_shuffled,
            "cluster job finished"
        );
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Progress {
    stages: usize,
    stages_done: usize,
    tasks: usize,
    tasks_done: usize,
    /// Tasks running now.
    running: usize,
    /// Rows the finished stages wrote to their exchanges.
    rows_shuffled: u64,
    /// Bytes the stages fetched from other executors' exchange outputs:
    /// Ballista's `decoded_bytes`, the fetched batches' in-memory Arrow size
    /// (not the compressed bytes on the wire; partitions an executor reads
    /// from its own disk are not counted).
    bytes_shuffled: u64,
    failed: bool,
}

async fn find_job(host: &str, port: u16, name: &str) -> Result<Option<String>, String> {
    let jobs = get_json(host, port, "/api/jobs").await?;
    Ok(jobs.as_array().and_then(|all| {
        all.iter().find(|j| j["job_name"].as_str() == Some(name)).and_then(|j| j["job_id"].as_str().map(str::to_owned))
    }))
}

async fn stages(host: &str, port: u16, job: &str) -> Result<Progress, String> {
    let body = get_json(host, port, &format!("/api/job/{job}/stages?plan_format=metrics")).await?;
    let stages = body["stages"].as_array().cloned().unwrap_or_default();
    let mut p = Progress {
        stages: stages.len(),
        stages_done: 0,
        tasks: 0,
        tasks_done: 0,
        running: 0,
        rows_shuffled: 0,
        bytes_shuffled: 0,
        failed: false,
    };
    for stage in &stages {
        let status = stage["stage_status"].as_str().unwrap_or_default();
        let done = status.eq_ignore_ascii_case("successful");
        p.failed |= status.eq_ignore_ascii_case("failed");
        p.stages_done += usize::from(done);
        if done {
            p.rows_shuffled += stage["output_rows"].as_u64().unwrap_or(0);
        }
        p.bytes_shuffled += metric_sum(stage["stage_plan"].as_str().unwrap_or_default(), "decoded_bytes");
        for task in stage["tasks"].as_array().map(Vec::as_slice).unwrap_or_default() {
            p.tasks += 1;
            p.tasks_done += usize::from(task["status"].as_str() == Some("Successful"));
            p.running += usize::from(task["status"].as_str() == Some("Running"));
        }
    }
    Ok(p)
}

/// The sum of every `name=N` in a stage plan rendered with its metrics
/// (`..., metrics=[decoded_bytes=123, ...]`, counts printed as plain numbers).
fn metric_sum(plan: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let mut total = 0;
    let mut rest = plan;
    while let Some(at) = rest.find(&key) {
        let boundary = at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        rest = &rest[at + key.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if boundary && digits > 0 {
            total += rest[..digits].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// A GET over plain HTTP/1.1 (the scheduler answers JSON with a length).
async fn get_json(host: &str, port: u16, path: &str) -> Result<serde_json::Value, String> {
    let (status, body) = request(host, port, "GET", path).await?;
    if status != "200" {
        return Err(format!("{path}: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
}

/// One request over plain HTTP/1.1: the status code and the body.
async fn request(host: &str, port: u16, method: &str, path: &str) -> Result<(String, Vec<u8>), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(response)
    };
    let response =
        tokio::time::timeout(Duration::from_secs(5), exchange).await.map_err(|_| "timed out".to_owned())??;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(format!("{path}: a chunked answer"));
    }
    Ok((status, response[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sums_read_every_operator_of_a_rendered_stage_plan() {
        let plan = "ShuffleWriterExec: partitioning=Hash([Column { name: \"k\", index: 0 }], 4), metrics=[output_rows=10, \
                    input_rows=10]\n  ShuffleReaderExec: partitions=4, metrics=[decoded_bytes=1200, fetch_requests=3]\n    \
                    ShuffleReaderExec: partitions=4, metrics=[decoded_bytes=34, local_partitions=1]\n";
        assert_eq!(metric_sum(plan, "decoded_bytes"), 1234);
        assert_eq!(metric_sum(plan, "input_rows"), 10);
        assert_eq!(metric_sum(plan, "rows"), 0, "a longer name's suffix is not the metric");
        assert_eq!(metric_sum("", "decoded_bytes"), 0);
    }
}
