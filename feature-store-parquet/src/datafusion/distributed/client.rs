//! Submits a distributed plan to the scheduler and streams the rows back.

use std::sync::Arc;

use ballista_core::config::{
    BALLISTA_CLIENT_GRPC_CONNECT_TIMEOUT_SECONDS, BALLISTA_CLIENT_GRPC_MAX_MESSAGE_SIZE,
    BALLISTA_CLIENT_IO_RETRIES_TIMES, BALLISTA_JOB_NAME,
};
use ballista_core::execution_plans::execute_physical_plan;
use ballista_core::extension::SessionConfigExt;
use datafusion::common::DataFusionError;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion_proto::protobuf::PhysicalPlanNode;
use feature_store_core::Error as CoreError;

use super::{Cluster, FeatureStoreCodec, StorageSettings, cluster_session_config};

/// Runs `plan` on `cluster`.
pub(crate) async fn execute(
    cluster: &Cluster,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<SendableRecordBatchStream, CoreError> {
    let config = cluster_session_config()
        .with_option_extension(StorageSettings::new(cluster.storage.clone()))
        // An unreachable scheduler fails in seconds, not after retries.
        .set_str(BALLISTA_CLIENT_GRPC_CONNECT_TIMEOUT_SECONDS, "5")
        .set_str(BALLISTA_CLIENT_IO_RETRIES_TIMES, "1")
        // In-memory entity rows travel inside the plan; `feature-store
        // cluster` schedulers accept messages this large.
        .set_usize(BALLISTA_CLIENT_GRPC_MAX_MESSAGE_SIZE, 256 << 20);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let session = format!("feature-store-{}-{nanos}", std::process::id());
    // The job is found by this name to report its progress.
    let config = config.set_str(BALLISTA_JOB_NAME, &session);
    let ballista = config.ballista_config();
    tracing::info!(scheduler = %cluster.scheduler, session, "submitting a job to the cluster");
    let (host, port) = cluster.host_port();
    let stall = super::progress::stall_timeout();
    let mut watcher = tokio::spawn(super::progress::watch(host.to_owned(), port, session.clone(), stall));
    // Stops watching if this call is dropped or fails.
    let _stop = AbortOnDrop(watcher.abort_handle());
    let codec = FeatureStoreCodec::new();
    let run =
        execute_physical_plan::<PhysicalPlanNode>(cluster.grpc_url(), &ballista, plan, &codec, session.clone(), config);
    // The job's result, unless the watcher finds it stalled first.
    let stalled = async {
        match (&mut watcher).await {
            Ok(Some(message)) => message,
            _ => std::future::pending().await,
        }
    };
    // The job's result, or the watcher's reason to have cancelled it.
    let outcome = tokio::select! {
        result = run => Ok(result),
        message = stalled => Err(message),
    };
    let result = match outcome {
        Ok(Ok(rows)) => Ok(mapped(cluster, rows)),
        // The watcher cancelled a stalled job and Ballista answered first
        // ("Cancelled"): the watcher's reason says what happened.
        Ok(Err(e)) if e.to_string().to_ascii_lowercase().contains("cancelled") => {
            match tokio::time::timeout(std::time::Duration::from_secs(2), &mut watcher).await {
                Ok(Ok(Some(message))) => {
                    Err(CoreError::data(format!("Ballista cluster {}", cluster.scheduler), message))
                }
                _ => Err(cluster_error(cluster, e)),
            }
        }
        Ok(Err(e)) => Err(cluster_error(cluster, e)),
        Err(message) => Err(CoreError::data(format!("Ballista cluster {}", cluster.scheduler), message)),
    };
    if result.is_ok() {
        watcher.abort();
        super::progress::report_finished(host, port, &session).await;
    }
    result
}

/// The job's rows, with a failure while fetching them (the final stage's
/// output sits on the executors; one may have stopped since) in the same
/// words as a failure of the job.
fn mapped(cluster: &Cluster, rows: SendableRecordBatchStream) -> SendableRecordBatchStream {
    use futures::StreamExt;
    let schema = rows.schema();
    let cluster = cluster.clone();
    let rows = rows.map(move |r| {
        r.map_err(|e| match e {
            // Already in a user's words; Ballista's own errors (a shuffle
            // fetch from a lost executor) come External too and are mapped.
            DataFusionError::External(inner) if inner.downcast_ref::<CoreError>().is_some() => {
                DataFusionError::External(inner)
            }
            e => DataFusionError::External(Box::new(streaming_error(&cluster, e))),
        })
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows))
}

/// A failure while the job's rows stream back: a broken transport there is
/// the executor holding them going away.
fn streaming_error(cluster: &Cluster, e: DataFusionError) -> CoreError {
    let lower = e.to_string().to_ascii_lowercase();
    if ["h2 protocol error", "broken pipe", "connection reset", "error reading a body"]
        .iter()
        .any(|m| lower.contains(m))
    {
        return lost_executor(cluster, &e.to_string());
    }
    // The rows are fetched from the executors holding them, so a refused
    // connection here is one of those gone (seen in CI: "Error connecting to
    // Ballista scheduler or executor at http://<executor>").
    if ["connection refused", "tcp connect", "error connecting"].iter().any(|m| lower.contains(m))
        && !names_the_scheduler(cluster, &e.to_string())
    {
        return lost_executor(cluster, &e.to_string());
    }
    cluster_error(cluster, e)
}

/// The `host:port` Ballista's client says it could not connect to ("...
/// Ballista scheduler or executor at http://host:port: ..."), if any; other
/// URLs in a message (an object store's, a status page's) are not it.
fn named_address(message: &str) -> Option<&str> {
    let at = ["scheduler or executor at ", "Ballista executor at "]
        .iter()
        .find_map(|marker| message.find(marker).map(|i| i + marker.len()))?;
    let rest = &message[at..];
    let rest = rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://")).unwrap_or(rest);
    let end = rest.find(|c: char| c.is_whitespace() || matches!(c, '/' | '"' | '\\' | ',')).unwrap_or(rest.len());
    // "at http://host:port: ..." ends the address with a colon.
    Some(rest[..end].trim_end_matches(':'))
}

/// Whether a transport error is about the scheduler: it names the
/// scheduler's address, or no address at all.
fn names_the_scheduler(cluster: &Cluster, message: &str) -> bool {
    let (host, port) = cluster.host_port();
    named_address(message).is_none_or(|address| address.eq_ignore_ascii_case(&format!("{host}:{port}")))
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`execute`] as a stream that submits the job when first polled; while
/// the stream lives, the job's progress is reported (see [`super::progress`]).
pub(crate) fn stream(cluster: Cluster, plan: Arc<dyn ExecutionPlan>) -> SendableRecordBatchStream {
    use futures::{StreamExt, TryStreamExt};
    let schema = plan.schema();
    let rows = futures::stream::once(async move {
        execute(&cluster, plan).await.map_err(|e| DataFusionError::External(Box::new(e)))
    })
    .try_flatten();
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rows.boxed()))
}

/// A cluster failure in the words a user can act on: an unreachable
/// scheduler names its address; a scheduler or executor without this
/// crate's codec says how to start one that has it.
pub(crate) fn cluster_error(cluster: &Cluster, e: DataFusionError) -> CoreError {
    let message = e.to_string();
    let lower = message.to_ascii_lowercase();
    let lost_executor = || lost_executor(cluster, &message);
    // Rows on an executor that is gone (before the scheduler's address
    // checks below: these name a transport error too).
    if lower.contains("shuffle fetch partition error") || lower.contains("failed to fetch partition") {
        return lost_executor();
    }
    let transport = ["transport error", "connection refused", "tcp connect", "dns error", "timed out"]
        .iter()
        .any(|m| lower.contains(m));
    // An executor's address, not the scheduler's: the executor is gone.
    if transport && !names_the_scheduler(cluster, &message) {
        return lost_executor();
    }
    if transport && !lower.contains("job ") {
        return CoreError::StoreUnavailable {
            store: format!("Ballista scheduler {} (offline_store.scheduler)", cluster.scheduler),
            source: Box::new(e),
        };
    }
    if lower.contains("ballistaphysicalplannode") || lower.contains("could not parse plan") {
        return CoreError::data(
            format!("Ballista cluster {}", cluster.scheduler),
            format!(
                "the scheduler or an executor cannot decode this project's operators (AsOfJoinExec, RowNumberExec, LatestPerKeyExec, AttemptStampExec, ...); \
                 start them with `feature-store cluster scheduler` and `feature-store cluster executor`, which \
                 register its codec ({message})"
            ),
        );
    }
    if lower.contains("could not be prepared or was rejected by executor") {
        // The scheduler reports only this; the executor's log has the cause,
        // which is nearly always a plan node it cannot decode.
        return CoreError::data(
            format!("Ballista cluster {}", cluster.scheduler),
            format!(
                "an executor could not prepare a task of this job; an executor without this project's codec (a \
                 stock Ballista executor) cannot decode its operators (AsOfJoinExec, RowNumberExec, \
                 LatestPerKeyExec, FolderWriterExec, UniqueRowsExec): start executors with `feature-store cluster executor`; the \
                 executor's log says what failed ({message})"
            ),
        );
    }
    if lower.contains("job ")
        && ["failed to fetch partition", "h2 protocol error", "broken pipe", "connection reset", "ipc error"]
            .iter()
            .any(|m| lower.contains(m))
    {
        return lost_executor();
    }
    if lower.contains("not found") && lower.contains("(on executor ") {
        return CoreError::data(
            format!("Ballista cluster {}", cluster.scheduler),
            format!(
                "an executor cannot open a file of this job: data must be on storage every executor can read \
                 (S3, or a path mounted at the same place on every executor) ({message})"
            ),
        );
    }
    CoreError::data(format!("Ballista cluster {}", cluster.scheduler), message)
}

/// An executor went away holding rows the job needed.
fn lost_executor(cluster: &Cluster, message: &str) -> CoreError {
    CoreError::data(
        format!("Ballista cluster {}", cluster.scheduler),
        format!(
            "an executor stopped or became unreachable during the job, and a task could not fetch the rows it had \
             produced; Ballista did not recover, so the job failed: run it again once the executors are up (a \
             retrieval left no output; a rerun also repairs what a materialization had written) ({message})"
        ),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::common::DataFusionError;

    use super::{Cluster, cluster_error, streaming_error};

    #[test]
    fn a_fetch_from_a_lost_executor_names_the_cluster_not_the_scheduler_address() {
        let cluster = Cluster::new("df://127.0.0.1:50050", None).unwrap();
        // As Ballista 55's client reported it after an executor was killed.
        let e = DataFusionError::Execution(
            "Shuffle fetch partition error from Executor 45d9, map_stage 3, map_partition 0, error desc: Status { \
             code: Unknown, message: \"transport error\", source: Some(hyper::Error(Io, Custom { kind: BrokenPipe, \
             error: \"stream closed because of a broken pipe\" })) }"
                .into(),
        );
        let message = cluster_error(&cluster, e).to_string();
        assert!(message.contains("Ballista cluster df://127.0.0.1:50050"), "{message}");
        assert!(message.contains("an executor stopped or became unreachable"), "{message}");
        assert!(!message.contains("offline_store.scheduler"), "{message}");
        // An unreachable scheduler still names its address and setting.
        let e = DataFusionError::Execution("tcp connect error: Connection refused".into());
        assert!(cluster_error(&cluster, e).to_string().contains("offline_store.scheduler"));
        // The executor holding the job's rows killed while they stream back (seen).
        let e = DataFusionError::Execution(
            "External error: code: 'Unknown error', message: \"h2 protocol error: error reading a body from \
             connection\", source: hyper::Error(Body, Error { kind: Io(Custom { kind: BrokenPipe }) })"
                .into(),
        );
        assert!(streaming_error(&cluster, e).to_string().contains("an executor stopped"));
        // The executor holding the rows killed before they were fetched
        // (seen in CI): its address, not the scheduler's, is refused.
        let refused = |address: &str| {
            DataFusionError::Execution(format!(
                "GrpcConnectionError(\"Error connecting to Ballista scheduler or executor at http://{address}: \
                 tonic::transport::Error(Transport, ConnectError(ConnectError(\\\"tcp connect error\\\", \
                 {address}, Os {{ code: 111, kind: ConnectionRefused }})))\")"
            ))
        };
        for message in [
            streaming_error(&cluster, refused("127.0.0.1:44935")).to_string(),
            cluster_error(&cluster, refused("127.0.0.1:44935")).to_string(),
        ] {
            assert!(message.contains("an executor stopped"), "{message}");
            assert!(!message.contains("offline_store.scheduler"), "{message}");
        }
        // Other URLs in a message (an object store's) are not an executor's.
        let e = DataFusionError::Execution(
            "Job failed: Object Store error: request to http://127.0.0.1:9000/bucket/x.parquet timed out".into(),
        );
        assert!(!cluster_error(&cluster, e).to_string().contains("an executor stopped"));
        assert_eq!(super::named_address("Ballista executor at http://[::1]:50051: refused"), Some("[::1]:50051"));
        // The same refusal from the scheduler's own address names it.
        for message in [
            streaming_error(&cluster, refused("127.0.0.1:50050")).to_string(),
            cluster_error(&cluster, refused("127.0.0.1:50050")).to_string(),
        ] {
            assert!(message.contains("offline_store.scheduler"), "{message}");
        }
    }

    /// Ballista wraps a failed shuffle fetch as an External error too (seen
    /// in CI after a kill): it is mapped, not passed on as ours.
    #[tokio::test]
    async fn a_foreign_external_error_while_streaming_is_mapped() {
        use futures::StreamExt;
        let cluster = Cluster::new("df://127.0.0.1:50050", None).unwrap();
        let fetch = std::io::Error::other(
            "Shuffle fetch partition error from Executor 951c, map_stage 3, map_partition 0, error desc: transport error",
        );
        let failed = futures::stream::iter([Err(DataFusionError::External(Box::new(fetch)))]);
        let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
        let rows = Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, failed));
        let got = super::mapped(&cluster, rows).next().await.unwrap().unwrap_err();
        let message = got.to_string();
        assert!(message.contains("Ballista cluster df://127.0.0.1:50050"), "{message}");
        assert!(message.contains("an executor stopped"), "{message}");
    }
}
