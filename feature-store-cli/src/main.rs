//! `feature-store`: the command-line tool for pipelines and people.

#[cfg(feature = "distributed")]
mod cluster;
mod historical;
mod ingest;
mod init;
mod interrupt;
mod online;
mod output;
mod parquet_out;
mod push;
mod quality;
mod serve;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use feature_store::registry::ApplyMode;

/// Embeddable feature store: define features in YAML, apply them to a
/// versioned registry, build training sets, and load and read the online store.
#[derive(Debug, Parser)]
#[command(name = "feature-store", version, about)]
struct Cli {
    /// Repo folder holding feature_store.yaml; default the current folder or
    /// the nearest one above it that holds one (not past a git repository's root).
    #[arg(long, global = true, env = "FEATURE_STORE_REPO")]
    repo: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Log what the library does on stderr: warnings always (retries, a
    /// store outage, a failed gate), -v for each step (registry writes, views
    /// materialized, retrievals), -vv for detail (per-view join metrics).
    /// RUST_LOG, when set, takes precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Memory the offline engine may use (retrieval, materialization,
    /// validation, dataset save and verify), e.g. 1GiB; overrides
    /// offline_store.memory_limit. The process stays within it plus a base
    /// of 10% or 100 MiB, whichever is larger (README: memory limits).
    #[arg(long, global = true, env = "FEATURE_STORE_MEMORY_LIMIT", value_name = "SIZE")]
    memory_limit: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a demo repo in DIR with generated sample Parquet data.
    Init {
        /// Folder to create (must be empty or absent).
        dir: PathBuf,
        /// Project name.
        #[arg(long, default_value = "driver_ranking")]
        project: String,
    },
    /// Validate the repo and write it to the registry; objects no longer defined are removed.
    Apply,
    /// Show what apply would change (added, changed, removed, breaking) without writing.
    Plan,
    /// List registered objects of one kind.
    List {
        /// Which kind.
        kind: Kind,
    },
    /// Build a point-in-time correct training set: each entity row with every
    /// requested feature as of the row's timestamp.
    #[command(group(ArgGroup::new("what").required(true).args(["features", "service"])))]
    Historical {
        /// Entity rows: a Parquet or CSV file, folder or URL, or a SQL query
        /// (starting with SELECT or WITH) over the project's sources.
        #[arg(long)]
        entities: String,
        /// Feature references, comma-separated: view:feature or whole views.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// Output file (.parquet or .csv), or a folder ending in / (a local
        /// path or s3://bucket/prefix/): Parquet files of up to 1M rows each
        /// in row order plus _manifest.json, written where the join runs (on
        /// a cluster, by the executors). Without it the rows are printed.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Name features view__feature.
        #[arg(long)]
        full_feature_names: bool,
        /// The entity table's timestamp column.
        #[arg(long, default_value = "event_timestamp")]
        timestamp_column: String,
        /// Save as a dataset: keep a copy of the entity table and record a
        /// manifest (definitions, source files, content hashes) under NAME,
        /// for `feature-store dataset verify`. Output is Parquet (default in
        /// the dataset's folder beside the registry).
        #[arg(long, value_name = "NAME")]
        save: Option<String>,
        /// Where the join runs: local (this process) or ballista (a cluster;
        /// needs --scheduler or offline_store.scheduler); overrides
        /// offline_store.engine.
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
        /// The Ballista scheduler, df://HOST:PORT; overrides offline_store.scheduler.
        #[arg(long)]
        scheduler: Option<String>,
        /// Rows per file of a folder --output.
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        rows_per_file: u64,
    },
    /// Saved datasets: list, show a manifest, verify against the present.
    Dataset {
        #[command(subcommand)]
        action: DatasetAction,
    },
    /// Load the online store with the newest value per entity whose event
    /// time is in [START, END] (both inclusive; ISO 8601, naive times are UTC).
    Materialize {
        /// Window start, e.g. 2024-05-01T00:00:00Z.
        start: String,
        /// Window end, or `now`.
        end: String,
        /// Only these views (comma-separated); default all online views.
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Materialize each view from its watermark (first run: END - ttl, or all
    /// history) to END, then advance the watermark.
    MaterializeIncremental {
        /// Window end (ISO 8601); default now.
        #[arg(default_value = "now")]
        end: String,
        /// Only these views (comma-separated); default all online views.
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Check views' data against their validation rules and schema contract
    /// (exit 1 when a rule fails); nothing is written.
    Validate {
        /// Views to check; default every view with rules.
        views: Vec<String>,
        /// Window start (ISO 8601); default all history.
        #[arg(long)]
        start: Option<String>,
        /// Window end; default now.
        #[arg(long, default_value = "now")]
        end: String,
    },
    /// Compute a view's reference profile (per feature: counts, nulls,
    /// min/max, mean/std, quantiles, bins or top values) and store it for its
    /// `drift` rule.
    Profile {
        /// The feature view.
        view: String,
        /// Window start (ISO 8601); default all history.
        #[arg(long)]
        start: Option<String>,
        /// Window end; default now.
        #[arg(long, default_value = "now")]
        end: String,
        /// Print the profile without storing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Per view: newest event time online, watermark, freshness lag, last run.
    Status,
    /// Read online features for entities: a table on a terminal (keys, then
    /// each value with its status and age); with --json or when piped, JSON
    /// shaped like Feast's feature server /get-online-features response.
    #[command(group(ArgGroup::new("what").required(true).args(["features", "service"])))]
    Online {
        /// Feature references, comma-separated: view:feature or whole views.
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// A feature service instead of --features.
        #[arg(long)]
        service: Option<String>,
        /// One entity row: key=value, composite keys as k1=v1,k2=v2; repeat for more rows.
        #[arg(long = "entity", required_unless_present = "requests")]
        entities: Vec<String>,
        /// Request data of on-demand features for one entity row:
        /// field=value[,field=value]; one per --entity, in the same order.
        #[arg(long = "request", id = "requests")]
        requests: Vec<String>,
        /// Name features view__feature (needed when two views share a feature name).
        #[arg(long)]
        full_feature_names: bool,
        /// Print the table even when stdout is not a terminal.
        #[arg(long)]
        table: bool,
    },
    /// Push rows of fresh values for one view from a file: to the online
    /// store (a stored newer value is never replaced), to its source's
    /// offline data (a new Parquet file), or both. Columns: the view's join
    /// keys, its source's timestamp field and its features.
    Push {
        /// The feature view.
        view: String,
        /// The rows: .parquet, .csv (with a header row; timestamps in ISO
        /// 8601, naive ones read as UTC) or .jsonl (one JSON object per line).
        #[arg(long)]
        file: PathBuf,
        /// Where the rows go.
        #[arg(long, value_enum, default_value = "online")]
        to: PushTo,
    },
    /// Serve features over HTTP and gRPC, Feast-compatible: POST
    /// /get-online-features, /push, /write-to-online-store, /materialize,
    /// /materialize-incremental; GET /health, /ready, /metrics; gRPC
    /// feast.serving.ServingService (with health and reflection) on the same
    /// port. Settings also come from feature_store.yaml's feature_server
    /// section; flags override it. Stops on SIGTERM/SIGINT after finishing
    /// requests in flight.
    Serve {
        /// Listen address; default 127.0.0.1 (other addresses need API keys
        /// or --allow-unauthenticated).
        #[arg(long)]
        host: Option<String>,
        /// HTTP port (gRPC is served on it too); default 6566, 0 picks a free one.
        #[arg(long)]
        port: Option<u16>,
        /// A second port serving gRPC only.
        #[arg(long)]
        grpc_port: Option<u16>,
        /// PEM certificate chain: serve HTTPS (and gRPC over TLS).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Runtime worker threads; default one per core.
        #[arg(long)]
        workers: Option<usize>,
        /// Largest request body, e.g. 16MiB.
        #[arg(long)]
        max_body: Option<String>,
        /// Per-request timeout, e.g. 30s; slower requests are answered 503.
        #[arg(long)]
        request_timeout: Option<String>,
        /// Requests served at once; more are answered 503 at once.
        #[arg(long)]
        max_concurrency: Option<usize>,
        /// How long shutdown waits for requests in flight, e.g. 30s.
        #[arg(long)]
        shutdown_timeout: Option<String>,
        /// Serve a non-loopback address without API keys.
        #[arg(long)]
        allow_unauthenticated: bool,
    },
    /// Consume every stream source (kind kafka, nats or redis_stream) that
    /// feature views read: each record is checked against the views' schema
    /// (bad ones go to the source's dead-letter file), written online, and
    /// appended to the source's batch_source; the broker is told only once
    /// both are durable, so a restart after a crash neither loses nor
    /// double-counts an event. Runs until SIGTERM/SIGINT, then flushes.
    Ingest {
        /// Only these views (and the stream sources they read).
        #[arg(long, value_delimiter = ',')]
        views: Vec<String>,
        /// This process's name in the consumer group; default the host name.
        /// Processes sharing a group need distinct names.
        #[arg(long)]
        consumer: Option<String>,
        /// How long events may wait before the batch source gets them; default
        /// each source's offline_flush_interval (60s).
        #[arg(long)]
        offline_flush_interval: Option<String>,
        /// Do not append to the batch sources (online only).
        #[arg(long)]
        no_offline_log: bool,
        /// How often runs of small offline log files (under 16 MiB, 8 or
        /// more adjacent in one folder) are merged into one file: at start,
        /// then this often (default 5m); "off" never merges.
        #[arg(long)]
        offline_compact_interval: Option<String>,
        /// Stop once no message has arrived for this long, e.g. 10s.
        #[arg(long)]
        stop_when_idle: Option<String>,
        /// Messages taken per poll (default 10000).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Serve Prometheus metrics (received, ingested, dead-lettered,
        /// lag per partition, freshness quantiles) on 127.0.0.1:PORT/metrics.
        #[arg(long)]
        metrics_port: Option<u16>,
    },
    /// Run an Apache DataFusion Ballista scheduler or executor (or both, on
    /// one machine) that can run this project's retrievals: set
    /// offline_store.engine: ballista and scheduler: df://HOST:PORT, or pass
    /// --engine ballista --scheduler df://HOST:PORT to historical.
    #[cfg(feature = "distributed")]
    Cluster {
        #[command(subcommand)]
        action: cluster::ClusterAction,
    },
    /// Print the project's registered definitions as one YAML definition file.
    Export,
    /// Show every registered object with this name.
    Describe {
        /// Object name.
        name: String,
    },
}

/// Rust ignores SIGPIPE, so `feature-store ... | head` would panic on the
/// closed pipe; a command-line tool should end quietly instead, as others do.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first in main, before any thread exists; only resets a signal disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps SIGPIPE from killing the process when a runtime thread writes to a
/// socket whose peer has gone (a cluster's executor, a server's client):
/// SIGPIPE is sent to the writing thread, and blocked there the write just
/// fails with EPIPE, as network code expects. The main thread, which prints
/// the command's output, keeps the default, so `| head` still ends it quietly.
#[allow(unsafe_code)]
fn block_sigpipe_in_this_thread() {
    #[cfg(unix)]
    // SAFETY: builds a signal set on the stack and changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// `feature-store dataset ...`
#[derive(Debug, Subcommand)]
enum DatasetAction {
    /// Saved datasets: name, rows, output, when.
    List,
    /// One dataset's manifest (definitions, files, hashes).
    Show {
        /// The dataset.
        name: String,
    },
    /// Recompute from the recorded inputs and report bit-identical (exit 0)
    /// or exactly what changed: a source file, a definition, the output (exit 1).
    Verify {
        /// The dataset.
        name: String,
    },
    /// Remove a dataset from the registry and delete the files of its save
    /// folder (an explicit --output elsewhere is kept).
    Delete {
        /// The dataset.
        name: String,
    },
}

/// Flags of the materialize commands.
#[derive(Debug, clap::Args)]
struct RunFlags {
    /// Stop at the first view whose validation fails (default: other views proceed).
    #[arg(long)]
    stop_on_failure: bool,
    /// Write the run's metrics here in the Prometheus text format.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Where the newest row per key is computed: local (this process) or
    /// ballista (a cluster; needs --scheduler or offline_store.scheduler);
    /// overrides offline_store.engine. Online writes happen here either way.
    #[arg(long, value_enum)]
    engine: Option<EngineArg>,
    /// The Ballista scheduler, df://HOST:PORT; overrides offline_store.scheduler.
    #[arg(long)]
    scheduler: Option<String>,
}

/// `historical --engine`, `materialize --engine`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EngineArg {
    Local,
    Ballista,
}

/// `push --to`: Feast's names for where pushed rows go.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum PushTo {
    Online,
    Offline,
    OnlineAndOffline,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Entities,
    Sources,
    Views,
    Services,
    RequestSources,
    OnDemandViews,
}

fn main() -> ExitCode {
    restore_sigpipe();
    interrupt::install();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.on_thread_start(block_sigpipe_in_this_thread);
    if let Command::Serve { workers, .. } = &cli.command {
        // The flag, else the repo's feature_server.workers (read again, and checked, by the command).
        let workers = workers.or_else(|| {
            let dir = repo_dir(cli.repo.as_deref()).ok()?;
            let config = feature_store::RepoConfig::load(&dir).ok()?;
            config.feature_server.as_ref()?.get("workers")?.as_u64().and_then(|n| usize::try_from(n).ok())
        });
        if let Some(n) = workers.filter(|n| *n > 0) {
            builder.worker_threads(n);
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    // With -v: how much memory the run took, to set --memory-limit and a
    // container's limit by (the process's high-water mark, mapped files included).
    if let Some(kib) = interrupt::peak_rss_kib() {
        tracing::info!(target: "feature_store::cli", peak_rss_mib = kib / 1024, "process finished");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The library logs through `tracing`; this binary chooses where it goes:
/// stderr, warnings only unless asked (-v, -vv or RUST_LOG), never on
/// stdout, which carries the command's output (and JSON).
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::new(directives),
        // Ballista logs through `log` (bridged here): with -v, a cluster job's
        // id and state changes, and the scheduler's and executors' own steps.
        _ => EnvFilter::new(match verbose {
            // Warnings (an ingest retrying through an outage, a failed
            // validation gate, a kept watermark), and a cluster job's id,
            // address and progress (stages, tasks).
            0 => "off,feature_store=warn,librdkafka=warn,feature_store::cluster_progress=info",
            1 => {
                "feature_store=info,ballista_core::execution_plans=info,ballista_scheduler=info,ballista_executor=info"
            }
            _ => {
                "feature_store=debug,ballista_core::execution_plans=info,ballista_scheduler=info,ballista_executor=info"
            }
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The error and its causes, each cause once: the library's errors already
/// quote their source in their own message, which `{:#}` would repeat.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// The repo folder: `--repo` as given, or else the current folder or the
/// nearest folder above it holding `feature_store.yaml`, as `git` and `feast`
/// look for theirs; the search stops at a git repository's root.
/// Opens the repo at `dir` with `--memory-limit`, when given, over the config's.
fn open_store(memory_limit: Option<&str>, dir: &std::path::Path) -> anyhow::Result<feature_store::FeatureStore> {
    open_store_on(memory_limit, None, None, dir)
}

/// [`open_store`] with `--engine` and `--scheduler` over the config's.
fn open_store_on(
    memory_limit: Option<&str>,
    engine: Option<EngineArg>,
    scheduler: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<feature_store::FeatureStore> {
    let mut config = feature_store::RepoConfig::load(dir)?;
    if let Some(limit) = memory_limit {
        feature_store::repo::parse_size(limit).map_err(|e| anyhow::anyhow!("--memory-limit {limit}: {e}"))?;
        config.offline_store.memory_limit = Some(limit.to_owned());
    }
    match engine {
        Some(EngineArg::Local) => {
            config.offline_store.engine = Some("local".into());
            config.offline_store.scheduler = None;
        }
        Some(EngineArg::Ballista) => config.offline_store.engine = Some("ballista".into()),
        None => {}
    }
    if let Some(s) = scheduler {
        if matches!(engine, Some(EngineArg::Local)) {
            anyhow::bail!("--scheduler is for --engine ballista");
        }
        config.offline_store.engine = Some("ballista".into());
        config.offline_store.scheduler = Some(s.to_owned());
    }
    Ok(feature_store::from_config(config)?)
}

fn repo_dir(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    const CONFIG: &str = "feature_store.yaml";
    let advice = "run `feature-store init DIR` to create one, or pass --repo DIR";
    if let Some(dir) = given {
        if !dir.join(CONFIG).is_file() && dir.is_dir() {
            anyhow::bail!(
                "{} not found; {} is not a feature repo ({advice})",
                dir.join(CONFIG).display(),
                dir.display()
            );
        }
        return Ok(dir.to_path_buf());
    }
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    for dir in cwd.ancestors() {
        if dir.join(CONFIG).is_file() {
            return Ok(dir.to_path_buf());
        }
        if dir.join(".git").exists() {
            anyhow::bail!(
                "no {CONFIG} in {} or the folders above it up to the git repository's root {}; \
                 {} is not in a feature repo ({advice})",
                cwd.display(),
                dir.display(),
                cwd.display()
            );
        }
    }
    anyhow::bail!("no {CONFIG} in {} or any folder above it; it is not in a feature repo ({advice})", cwd.display())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir, project } => {
            init::scaffold(&dir, &project)?;
            if cli.json {
                output::json(&serde_json::json!({ "created": dir, "project": project }))
            } else {
                println!("Created demo repo {} (project {project}).", dir.display());
                println!(
                    "Next: cd {} && feature-store plan   (then feature-store apply to register it)",
                    dir.display()
                );
                Ok(())
            }
        }
        Command::Apply | Command::Plan => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let defs = store.repo_definitions()?;
            if matches!(cli.command, Command::Plan) {
                let plan = store.plan(&defs, ApplyMode::Sync).await?;
                return if cli.json {
                    output::json(&plan)
                } else {
                    println!("{plan}");
                    Ok(())
                };
            }
            let outcome = store.apply(&defs, ApplyMode::Sync).await?;
            if cli.json {
                return output::json(&serde_json::json!({
                    "plan": outcome.plan,
                    "version": outcome.version,
                    "written": outcome.written,
                    "registry": store.registry().location(),
                }));
            }
            println!("{}", outcome.plan);
            if outcome.written {
                println!("Applied: registry {} is now at version {}.", store.registry().location(), outcome.version);
            } else {
                println!("Registry {} unchanged at version {}.", store.registry().location(), outcome.version);
            }
            Ok(())
        }
        Command::List { kind } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            match kind {
                Kind::Entities => output::entities(&store.list_entities().await?, cli.json),
                Kind::Sources => output::sources(&store.list_data_sources().await?, cli.json),
                Kind::Views => output::views(&store.list_feature_views().await?, cli.json),
                Kind::Services => output::services(&store.list_feature_services().await?, cli.json),
                Kind::RequestSources => output::request_sources(&store.list_request_sources().await?, cli.json),
                Kind::OnDemandViews => output::on_demand_views(&store.list_on_demand_feature_views().await?, cli.json),
            }
        }
        Command::Historical {
            entities,
            features,
            service,
            output,
            full_feature_names,
            timestamp_column,
            save,
            engine,
            scheduler,
            rows_per_file,
        } => {
            let dir = repo_dir(cli.repo.as_deref())?;
            let store = open_store_on(cli.memory_limit.as_deref(), engine, scheduler.as_deref(), &dir)?;
            let features = match service {
                Some(s) => feature_store::Features::service(s),
                None => feature_store::Features::refs(features),
            };
            let options = feature_store::HistoricalOptions::default()
                .with_full_feature_names(full_feature_names)
                .with_timestamp_column(timestamp_column);
            match (save, output.as_deref()) {
                (Some(_), Some(out)) if historical::is_folder(out) => {
                    anyhow::bail!("--save writes one Parquet file; give --output a .parquet file name, not a folder")
                }
                (Some(name), out) => {
                    historical::save(&store, &name, &entities, &features, &options, out, cli.json).await
                }
                (None, Some(out)) if historical::is_folder(out) => {
                    historical::run_folder(&store, &entities, &features, &options, out, rows_per_file, cli.json).await
                }
                (None, Some(out)) if out.to_str().is_some_and(feature_store::object_store::location::is_url) => {
                    anyhow::bail!(
                        "--output {}: one file is written on this machine; for an object store give a folder \
                         ending in / (Parquet files and a manifest)",
                        out.display()
                    )
                }
                (None, out) => historical::run(&store, &entities, &features, &options, out, cli.json).await,
            }
        }
        Command::Dataset { action } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            match action {
                DatasetAction::List => historical::dataset_list(&store, cli.json).await,
                DatasetAction::Show { name } => historical::dataset_show(&store, &name, cli.json).await,
                DatasetAction::Verify { name } => historical::dataset_verify(&store, &name, cli.json).await,
                DatasetAction::Delete { name } => historical::dataset_delete(&store, &name, cli.json).await,
            }
        }
        Command::Materialize { start, end, views, run } => {
            let dir = repo_dir(cli.repo.as_deref())?;
            let store = open_store_on(cli.memory_limit.as_deref(), run.engine, run.scheduler.as_deref(), &dir)?;
            let (start, end) = (online::parse_time(&start)?, online::parse_time(&end)?);
            online::materialize(&store, Some(start), end, views, &run, cli.json).await
        }
        Command::MaterializeIncremental { end, views, run } => {
            let dir = repo_dir(cli.repo.as_deref())?;
            let store = open_store_on(cli.memory_limit.as_deref(), run.engine, run.scheduler.as_deref(), &dir)?;
            online::materialize(&store, None, online::parse_time(&end)?, views, &run, cli.json).await
        }
        Command::Validate { views, start, end } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let start = start.as_deref().map(online::parse_time).transpose()?;
            quality::validate(&store, &views, start, online::parse_time(&end)?, cli.json).await
        }
        Command::Profile { view, start, end, dry_run } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let start = start.as_deref().map(online::parse_time).transpose()?;
            quality::profile(&store, &view, start, online::parse_time(&end)?, !dry_run, cli.json).await
        }
        Command::Status => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            quality::status(&store, cli.json).await
        }
        Command::Online { features, service, entities, requests, full_feature_names, table } => {
            if table && cli.json {
                anyhow::bail!("--table and --json ask for two different outputs; give one of them");
            }
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let features = match service {
                Some(s) => feature_store::Features::service(s),
                None => feature_store::Features::refs(features),
            };
            online::online(&store, &features, &entities, &requests, full_feature_names, cli.json, table).await
        }
        Command::Push { view, file, to } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let mode = match to {
                PushTo::Online => feature_store::PushMode::Online,
                PushTo::Offline => feature_store::PushMode::Offline,
                PushTo::OnlineAndOffline => feature_store::PushMode::OnlineAndOffline,
            };
            push::push(&store, &view, &file, mode, cli.json).await
        }
        Command::Serve {
            host,
            port,
            grpc_port,
            tls_cert,
            tls_key,
            workers,
            max_body,
            request_timeout,
            max_concurrency,
            shutdown_timeout,
            allow_unauthenticated,
        } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let flags = serve::Flags {
                host,
                port,
                grpc_port,
                tls: tls_cert.zip(tls_key),
                workers,
                max_body,
                request_timeout,
                max_concurrency,
                shutdown_timeout,
                allow_unauthenticated,
            };
            serve::serve(store, flags, cli.json).await
        }
        Command::Ingest {
            views,
            consumer,
            offline_flush_interval,
            no_offline_log,
            offline_compact_interval,
            stop_when_idle,
            batch_size,
            metrics_port,
        } => {
            let dir = repo_dir(cli.repo.as_deref())?;
            let store = open_store(cli.memory_limit.as_deref(), &dir)?;
            let flags = ingest::Flags {
                views,
                consumer,
                offline_flush_interval,
                no_offline_log,
                offline_compact_interval,
                stop_when_idle,
                batch_size,
                metrics_port,
            };
            ingest::ingest(store, &dir, flags, cli.json).await
        }
        #[cfg(feature = "distributed")]
        Command::Cluster { action } => cluster::run(action).await,
        Command::Export => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let doc = store.document().await?;
            let project = doc.project(store.project());
            if !project.exists() {
                anyhow::bail!("project \"{}\" has nothing applied in {}", store.project(), store.registry().location());
            }
            print!("{}", project.to_definitions().to_yaml());
            Ok(())
        }
        Command::Describe { name } => {
            let store = open_store(cli.memory_limit.as_deref(), &repo_dir(cli.repo.as_deref())?)?;
            let found = store.describe(&name).await?;
            if cli.json {
                output::json(&found)
            } else {
                for d in found {
                    print!("{}", yaml_serde::to_string(&d)?);
                }
                Ok(())
            }
        }
    }
}
