//! `feature-store cluster ...`: an Apache DataFusion Ballista scheduler and
//! executors with this project's codec registered, so retrievals with
//! `offline_store.engine: ballista` can run on them.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::Context;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use feature_store::parquet::datafusion::distributed::{
    Cluster, FeatureStoreCodec, cluster_runtime_env, cluster_session_config, cluster_session_state, set_executor_name,
};

/// Seconds without a heartbeat after which the scheduler drops an executor.
const EXECUTOR_TIMEOUT_SECONDS: u64 = 30;

/// Largest gRPC message: a plan carries in-memory entity rows (the client
/// sends the same limit; see `feature_store_parquet`'s cluster client).
const MAX_MESSAGE_BYTES: u32 = 256 << 20;

/// `feature-store cluster ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterAction {
    /// Run a scheduler: it plans jobs into stages and hands tasks to executors.
    Scheduler {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// gRPC port (clients and executors connect to it).
        #[arg(long, default_value_t = 50050)]
        port: u16,
    },
    /// Run an executor serving the scheduler at --scheduler.
    Executor {
        /// The scheduler, df://HOST:PORT.
        #[arg(long)]
        scheduler: String,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Arrow Flight port (other executors and clients fetch shuffle data from it).
        #[arg(long, default_value_t = 50051)]
        port: u16,
        /// The executor's gRPC port; default a free one.
        #[arg(long)]
        grpc_port: Option<u16>,
        /// Where shuffle files go; default a temporary folder.
        #[arg(long)]
        work_dir: Option<std::path::PathBuf>,
        /// Tasks run at once; default one per core.
        #[arg(long)]
        concurrent_tasks: Option<usize>,
        /// Run as a stock Ballista executor: Ballista's own codec and session
        /// settings, without this project's operators. For checking what a
        /// cluster that lacks them reports.
        #[arg(long, hide = true)]
        stock: bool,
    },
    /// A scheduler and N executors in this process, for trying a cluster on one machine.
    Local {
        /// Executors to start.
        #[arg(long, default_value_t = 2)]
        executors: usize,
        /// The scheduler's port; default 50050.
        #[arg(long, default_value_t = 50050)]
        port: u16,
    },
}

/// Runs the action until it is stopped (SIGTERM, Ctrl+C).
pub(crate) async fn run(action: ClusterAction) -> anyhow::Result<()> {
    match action {
        ClusterAction::Scheduler { host, port } => {
            let addr = socket(&host, port)?;
            println!("feature-store cluster scheduler listening on df://{addr}");
            // On a runtime thread, where a closed peer's SIGPIPE is blocked.
            tokio::spawn(scheduler(addr)).await.context("the scheduler task")?
        }
        ClusterAction::Executor { scheduler, host, port, grpc_port, work_dir, concurrent_tasks, stock } => {
            let (scheduler_host, scheduler_port) = scheduler_address(&scheduler)?;
            let grpc_port = match grpc_port {
                Some(p) => p,
                None => free_port(&host)?,
            };
            println!(
                "feature-store cluster executor on {host}:{port} (gRPC {grpc_port}), scheduler df://{scheduler_host}:{scheduler_port}"
            );
            set_executor_name(format!("{host}:{port}"));
            let listen = Listen { host, port, grpc_port };
            tokio::spawn(executor(scheduler_host, scheduler_port, listen, work_dir, concurrent_tasks, stock))
                .await
                .context("the executor task")?
        }
        ClusterAction::Local { executors, port } => {
            if executors == 0 {
                anyhow::bail!("--executors must be at least 1");
            }
            let addr = socket("127.0.0.1", port)?;
            set_executor_name(format!("of the local cluster (scheduler df://{addr})"));
            let scheduler = tokio::spawn(scheduler(addr));
            let mut tasks = Vec::new();
            for _ in 0..executors {
                let (flight, grpc) = (free_port("127.0.0.1")?, free_port("127.0.0.1")?);
                tasks.push(tokio::spawn(executor(
                    "127.0.0.1".into(),
                    port,
                    Listen { host: "127.0.0.1".into(), port: flight, grpc_port: grpc },
                    None,
                    Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
                    false,
                )));
            }
            println!(
                "feature-store local cluster: scheduler df://{addr}, {executors} executor(s); set offline_store.engine: ballista and scheduler: df://{addr}"
            );
            tokio::select! {
                r = scheduler => r.context("the scheduler task")?,
                r = futures::future::select_all(tasks) => r.0.context("an executor task")?,
            }
        }
    }
}

fn socket(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let text = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    text.parse()
        .with_context(|| format!("--host {host} --port {port} is not a listen address (an IP address and a port)"))
}

/// A port nothing listens on now.
fn free_port(host: &str) -> anyhow::Result<u16> {
    let listener = TcpListener::bind((host, 0)).with_context(|| format!("finding a free port on {host}"))?;
    Ok(listener.local_addr()?.port())
}

/// `df://host:port` (or `host:port`) as host and port.
fn scheduler_address(text: &str) -> anyhow::Result<(String, u16)> {
    let cluster = Cluster::new(text, None).map_err(|e| anyhow::anyhow!("--scheduler: {e}"))?;
    let (host, port) = cluster.host_port();
    Ok((host.to_owned(), port))
}

/// This project's codec, compiling on-demand features with the built-in
/// expression engine (user-defined functions live in the processes that
/// register them, so retrievals calling them are refused before they reach
/// the cluster).
fn codec() -> FeatureStoreCodec {
    FeatureStoreCodec::new().with_engine(Arc::new(feature_store::expressions::DataFusionEngine::new()))
}

async fn scheduler(addr: SocketAddr) -> anyhow::Result<()> {
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        override_config_producer: Some(Arc::new(cluster_session_config)),
        override_session_builder: Some(Arc::new(cluster_session_state)),
        override_physical_codec: Some(Arc::new(codec())),
        // An executor that stops heartbeating is dropped within about 30 s
        // (Ballista's default is 3 minutes), and its tasks run elsewhere.
        executor_timeout_seconds: EXECUTOR_TIMEOUT_SECONDS,
        expire_dead_executor_interval_seconds: 5,
        no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_SECONDS,
        // Entity rows given in memory travel inside the plan.
        grpc_server_max_decoding_message_size: MAX_MESSAGE_BYTES,
        grpc_server_max_encoding_message_size: MAX_MESSAGE_BYTES,
        grpc_client_max_message_size: MAX_MESSAGE_BYTES,
        ..Default::default()
    };
    let cluster =
        BallistaCluster::new_from_config(&config).await.map_err(|e| anyhow::anyhow!("starting the scheduler: {e}"))?;
    start_server(cluster, addr, Arc::new(config)).await.map_err(|e| anyhow::anyhow!("scheduler on {addr}: {e}"))
}

/// Where an executor listens: Arrow Flight on `port`, gRPC on `grpc_port`.
struct Listen {
    host: String,
    port: u16,
    grpc_port: u16,
}

async fn executor(
    scheduler_host: String,
    scheduler_port: u16,
    Listen { host, port, grpc_port }: Listen,
    work_dir: Option<std::path::PathBuf>,
    concurrent_tasks: Option<usize>,
    stock: bool,
) -> anyhow::Result<()> {
    let mut config = ExecutorProcessConfig {
        bind_host: host.clone(),
        port,
        grpc_port,
        scheduler_host,
        scheduler_port,
        // Keep trying while the scheduler starts (`cluster local` starts both at once).
        scheduler_connect_timeout_seconds: 30,
        work_dir: work_dir.map(|d| d.display().to_string()),
        override_config_producer: Some(Arc::new(cluster_session_config)),
        override_runtime_producer: Some(Arc::new(cluster_runtime_env)),
        override_physical_codec: Some(Arc::new(codec())),
        executor_heartbeat_interval_seconds: 10,
        grpc_max_decoding_message_size: MAX_MESSAGE_BYTES,
        grpc_max_encoding_message_size: MAX_MESSAGE_BYTES,
        ..Default::default()
    };
    if let Some(n) = concurrent_tasks {
        config.vcores = n.max(1);
    }
    if stock {
        config.override_config_producer = None;
        config.override_runtime_producer = None;
        config.override_physical_codec = None;
    }
    start_executor_process(Arc::new(config)).await.map_err(|e| anyhow::anyhow!("executor on {host}:{port}: {e}"))
}
