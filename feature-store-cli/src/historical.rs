//! `feature-store historical`: stream a training set to a file or the terminal.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use feature_store::{EntityInput, FeatureStore, Features, HistoricalOptions};
use futures::StreamExt;

fn entity_input(text: &str) -> EntityInput {
    let head = text.trim_start().get(..7).unwrap_or_default().to_ascii_uppercase();
    if head.starts_with("SELECT ") || head.starts_with("WITH ") {
        EntityInput::Sql(text.to_owned())
    } else if text.contains("://") {
        EntityInput::Path(text.to_owned())
    } else {
        // Paths typed on the command line are relative to the shell's folder, not the repo.
        let abs = std::path::absolute(text).map_or_else(|_| text.to_owned(), |p| p.display().to_string());
        EntityInput::Path(abs)
    }
}

#[allow(clippy::large_enum_variant)] // one value per run; boxing buys nothing
enum Sink {
    Parquet(crate::parquet_out::ParallelParquetWriter),
    Csv(arrow::csv::Writer<std::fs::File>),
    Terminal(Vec<RecordBatch>),
}

/// Where the output is written until it is complete: beside it, hidden, so a
/// failed run leaves any previous file untouched and no partial one behind.
fn partial_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// Whether `--output` names a folder (ends with `/`): the rows are then
/// written as Parquet files and a manifest where they are produced.
pub(crate) fn is_folder(output: &Path) -> bool {
    output.to_str().is_some_and(|s| s.ends_with('/'))
}

/// `historical --output FOLDER/`: Parquet files of `rows_per_file` rows in
/// row order plus `_manifest.json`, written by the cluster's executors when the
/// engine is ballista.
pub(crate) async fn run_folder(
    store: &FeatureStore,
    entities: &str,
    features: &Features,
    options: &HistoricalOptions,
    output: &Path,
    rows_per_file: u64,
    json: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = output.to_str().context("--output is not valid UTF-8")?;
    let folder = if feature_store::object_store::location::is_url(text) {
        text.to_owned()
    } else {
        let absolute = std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf());
        let absolute = format!("{}/", absolute.display().to_string().trim_end_matches('/'));
        store.check_output_outside_sources(&absolute).await?;
        absolute
    };
    let m = store
        .write_historical_features(entity_input(entities), features, options, &folder, Some(rows_per_file))
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "rows": m.rows, "seconds": secs, "output": m.folder, "files": m.files.len(),
                "manifest": format!("{}{}", m.folder, feature_store::offline::folder::MANIFEST),
                "engine": m.engine,
            })
        );
    } else {
        eprintln!(
            "historical: {} rows in {} file(s) in {secs:.1}s written to {} (order: {}{})",
            m.rows,
            m.files.len(),
            m.folder,
            m.folder,
            feature_store::offline::folder::MANIFEST
        );
    }
    Ok(())
}

pub(crate) async fn run(
    store: &FeatureStore,
    entities: &str,
    features: &Features,
    options: &HistoricalOptions,
    output: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(out) = output {
        let absolute = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
        store.check_output_outside_sources(&absolute.display().to_string()).await?;
        // Writing over the entity table would replace the rows being read.
        if let (Ok(a), Ok(b)) = (std::fs::canonicalize(out), std::fs::canonicalize(entities))
            && a == b
        {
            anyhow::bail!(
                "--output {} is the entity table being read; write the training set to another file",
                out.display()
            );
        }
    }
    let partial = output.map(partial_path);
    if let Some(out) = output {
        let swept = crate::interrupt::sweep_stale(out);
        if swept > 0 {
            tracing::info!(swept, "removed partial output files of interrupted runs");
        }
    }
    let _interrupt = partial.as_deref().map(crate::interrupt::PartialFile::register);
    let views = store.resolve_views(features, options.full_feature_names).await?;
    let mut empty = EmptyRows::new(&views);
    let result = write(store, entities, features, options, output, partial.as_deref(), started, &mut empty).await;
    let rows = match (result, output, &partial) {
        (Ok(rows), Some(out), Some(tmp)) => {
            std::fs::rename(tmp, out)
                .with_context(|| format!("cannot move the finished output to {}", out.display()))?;
            rows
        }
        (Ok(rows), _, _) => rows,
        (Err(e), _, tmp) => {
            if let Some(tmp) = tmp {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(e);
        }
    };
    let secs = started.elapsed().as_secs_f64();
    if json {
        let empty: serde_json::Map<String, serde_json::Value> =
            empty.views.iter().map(|v| (v.name.clone(), v.rows.into())).collect();
        eprintln!(
            "{}",
            serde_json::json!({ "rows": rows, "seconds": secs, "output": output, "rows_without_values": empty })
        );
    } else {
        eprintln!(
            "historical: {rows} rows{} in {secs:.1}s",
            output
                .map(|p| format!(
                    " written to {}",
                    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display()
                ))
                .unwrap_or_default()
        );
        empty.print(rows);
    }
    Ok(())
}

/// Per view, how many output rows got no value at all from it: the rows a
/// newcomer would otherwise puzzle over in a training set.
struct EmptyRows {
    views: Vec<EmptyView>,
}

struct EmptyView {
    name: String,
    ttl: Option<String>,
    columns: Vec<String>,
    rows: u64,
}

impl EmptyRows {
    fn new(views: &[feature_store::historical::ViewRequest]) -> Self {
        let views = views
            .iter()
            .map(|v| EmptyView {
                name: v.view.name.clone(),
                ttl: v.view.ttl.filter(|t| !t.is_zero()).map(feature_store::duration::format_duration),
                columns: v.output_names.clone(),
                rows: 0,
            })
            .collect();
        Self { views }
    }

    /// One line per view with rows that got no value from it (stderr).
    fn print(&self, rows: usize) {
        for v in self.views.iter().filter(|v| v.rows > 0) {
            let within = v.ttl.as_ref().map(|t| format!(" within its ttl of {t}")).unwrap_or_default();
            eprintln!(
                "  {} of {rows} rows have no value from view \"{}\": it has no row for their keys at or before \
                 their timestamp{within} (or that row's values are null)",
                v.rows, v.name
            );
        }
    }

    fn count(&mut self, batch: &RecordBatch) {
        for view in &mut self.views {
            let mut all_null: Option<arrow::array::BooleanArray> = None;
            for name in &view.columns {
                let Some(column) = batch.column_by_name(name) else { continue };
                let nulls = arrow::compute::is_null(column.as_ref()).expect("is_null works on every type");
                all_null = Some(match all_null {
                    None => nulls,
                    Some(acc) => arrow::compute::and(&acc, &nulls).expect("equal lengths"),
                });
            }
            view.rows += all_null.map_or(0, |a| a.true_count() as u64);
        }
    }
}

/// Runs the retrieval into `create_at` (the partial file) or the terminal; returns the rows.
#[allow(clippy::too_many_arguments)] // one call site; a struct of borrowed arguments buys nothing
async fn write(
    store: &FeatureStore,
    entities: &str,
    features: &Features,
    options: &HistoricalOptions,
    output: Option<&Path>,
    create_at: Option<&Path>,
    started: Instant,
    empty: &mut EmptyRows,
) -> anyhow::Result<usize> {
    let mut stream = store.get_historical_features(entity_input(entities), features, options).await?;
    let schema = stream.schema();
    let mut sink = match (output, create_at) {
        (Some(path), Some(create_at)) => {
            let file = std::fs::File::create(create_at).with_context(|| {
                format!("cannot write {} (creating its partial file {})", path.display(), create_at.display())
            })?;
            match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("parquet") | Some("pq") => {
                    let props = writer_properties(&schema, memory_limit(store));
                    let max_bytes = crate::parquet_out::row_group_bytes(memory_limit(store));
                    Sink::Parquet(crate::parquet_out::ParallelParquetWriter::try_new(file, schema, props, max_bytes)?)
                }
                Some("csv") => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(file)),
                _ => bail!("output {}: use a .parquet or .csv file name", path.display()),
            }
        }
        _ => Sink::Terminal(Vec::new()),
    };
    // Encoding runs on its own thread so the join keeps producing meanwhile.
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(8);
    // I/O errors (a full disk, a file size limit) name the file being written.
    let target = output.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string());
    let writing = move || format!("cannot write the output {}", target.as_deref().unwrap_or("-"));
    let writing2 = writing.clone();
    let writer = std::thread::spawn(move || -> anyhow::Result<Sink> {
        for batch in rx {
            match &mut sink {
                Sink::Parquet(w) => w.write(batch).with_context(&writing)?,
                Sink::Csv(w) => w.write(&batch).with_context(&writing)?,
                Sink::Terminal(all) => all.push(batch),
            }
        }
        Ok(sink)
    });
    let mut rows = 0usize;
    let mut last_report = Instant::now();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        empty.count(&batch);
        if tx.send(batch).is_err() {
            break; // the writer failed; its error is reported below
        }
        if last_report.elapsed() > Duration::from_secs(2) && output.is_some() {
            eprintln!("... {rows} rows, {:.1}s", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
    drop(tx);
    let sink = writer.join().map_err(|_| anyhow::anyhow!("the output writer panicked"))??;
    match sink {
        Sink::Parquet(w) => {
            w.close().with_context(writing2)?;
        }
        Sink::Csv(w) => drop(w),
        Sink::Terminal(all) => {
            println!("{}", arrow::util::pretty::pretty_format_batches(&all)?);
        }
    }
    Ok(rows)
}

/// The offline store's memory limit, when one is set (the config was
/// validated when the store opened).
fn memory_limit(store: &FeatureStore) -> Option<usize> {
    let text = store.config().offline_store.memory_limit.as_deref()?;
    feature_store::repo::parse_size(text).ok()
}

/// Snappy like most Parquet writers; no dictionaries for floats, which are
/// rarely repeated and only cost time to try. Under a memory limit the other
/// columns' dictionaries share 1/16 of it.
fn writer_properties(
    schema: &arrow::datatypes::Schema,
    memory_limit: Option<usize>,
) -> parquet::file::properties::WriterProperties {
    use arrow::datatypes::DataType;
    use parquet::file::properties::WriterProperties;
    use parquet::schema::types::ColumnPath;
    let mut b = WriterProperties::builder().set_compression(parquet::basic::Compression::SNAPPY);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Float16 | DataType::Float32 | DataType::Float64) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
    }
    if let Some(m) = memory_limit {
        b = b.set_dictionary_page_size_limit((m / 16 / schema.fields().len().max(1)).clamp(8 << 10, 1 << 20));
    }
    b.build()
}

/// `historical --save NAME`: writes Parquet and records a dataset manifest.
pub(crate) async fn save(
    store: &FeatureStore,
    name: &str,
    entities: &str,
    features: &Features,
    options: &HistoricalOptions,
    output: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if let Some(p) = output
        && !matches!(
            p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
            Some("parquet" | "pq")
        )
    {
        bail!("output {}: a saved dataset is written as Parquet; use a .parquet file name", p.display());
    }
    let output = output.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string());
    let m = store.save_dataset(name, entity_input(entities), features, options, output.as_deref()).await?;
    let secs = started.elapsed().as_secs_f64();
    // The rows without values, as a plain run reports them: read back from the saved output.
    let views = store.resolve_views(features, options.full_feature_names).await?;
    let mut empty = EmptyRows::new(&views);
    let mut saved = store.read_dataset(name).await?;
    while let Some(batch) = saved.next().await {
        empty.count(&batch?);
    }
    let rows = m.output.rows;
    if json {
        let empty: serde_json::Map<String, serde_json::Value> =
            empty.views.iter().map(|v| (v.name.clone(), v.rows.into())).collect();
        eprintln!(
            "{}",
            serde_json::json!({
                "rows": rows, "seconds": secs, "output": m.output.file.location, "dataset": name,
                "rows_without_values": empty,
            })
        );
    } else {
        eprintln!(
            "historical: {rows} rows written to {} in {secs:.1}s; saved as dataset \"{name}\" (content hash {})",
            m.output.file.location,
            &m.output.content_hash[..16.min(m.output.content_hash.len())]
        );
        empty.print(rows as usize);
    }
    Ok(())
}

pub(crate) async fn dataset_list(store: &FeatureStore, json: bool) -> anyhow::Result<()> {
    let all = store.list_datasets().await?;
    if json {
        return crate::output::json(&all);
    }
    crate::output::table(
        &["NAME", "ROWS", "OUTPUT", "CREATED"],
        all.iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.rows.to_string(),
                    r.output.clone(),
                    r.created_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                ]
            })
            .collect(),
    );
    Ok(())
}

pub(crate) async fn dataset_delete(store: &FeatureStore, name: &str, json: bool) -> anyhow::Result<()> {
    let d = store.delete_dataset(name).await?;
    if json {
        return crate::output::json(&d);
    }
    for f in &d.deleted {
        println!("deleted {f}");
    }
    for f in &d.kept {
        println!("kept    {f} (outside the dataset's folder)");
    }
    eprintln!("dataset \"{name}\" removed");
    Ok(())
}

pub(crate) async fn dataset_show(store: &FeatureStore, name: &str, json: bool) -> anyhow::Result<()> {
    let m = store.get_dataset(name).await?;
    if json {
        return crate::output::json(&m);
    }
    println!("dataset:           {}", m.name);
    println!("created:           {}", m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    println!("registry version:  {}", m.registry_version);
    if let Some(s) = &m.feature_service {
        println!("feature service:   {s}");
    }
    println!("features:          {}", m.features.join(", "));
    println!("full names:        {}", m.full_feature_names);
    println!("timestamp column:  {}", m.timestamp_column);
    let table = |label: &str, t: &feature_store::dataset::StoredTable| {
        println!("{label:<19}{} rows, {} bytes at {}", t.rows, t.file.size, t.file.location);
        if let Some(o) = &t.origin {
            println!("{:<19}from {o}", "");
        }
        println!("{:<19}content {}  file {}", "", t.content_hash, t.file.sha256.as_deref().unwrap_or("-"));
    };
    table("entity table:", &m.entity_table);
    table("output:", &m.output);
    println!("views:");
    for v in &m.views {
        // Inputs of on-demand features nobody requested are read, not returned.
        let features: Vec<String> = v
            .features
            .iter()
            .zip(&v.output_names)
            .map(|(f, o)| {
                if feature_store::on_demand::is_hidden_input(o) { format!("{f} (on-demand input)") } else { f.clone() }
            })
            .collect();
        println!("  {} (source {} at {}): {}", v.view.name, v.source.name, v.source.path, features.join(", "));
    }
    if !m.on_demand.is_empty() {
        println!("on-demand views (as recorded; verify compiles these):");
        for s in &m.on_demand {
            println!("  {}:", s.view.name);
            for &f in &s.features {
                if let Some(f) = s.view.features.get(f) {
                    println!("    {} {} = {}", f.name, f.dtype, f.expression);
                }
            }
            for u in &s.view.udfs {
                println!("    calls {u}");
            }
        }
    }
    println!("source files ({}):", m.source_files.len());
    for f in &m.source_files {
        println!("  {}  {} bytes  etag {}", f.object.location, f.object.size, f.object.e_tag.as_deref().unwrap_or("-"));
    }
    Ok(())
}

pub(crate) async fn dataset_verify(store: &FeatureStore, name: &str, json: bool) -> anyhow::Result<()> {
    let v = store.verify_dataset(name).await?;
    if json {
        crate::output::json(&v)?;
    } else {
        println!("{v}");
    }
    if !v.identical() {
        bail!("dataset \"{name}\" differs from its record: {} difference(s), listed above", v.findings.len());
    }
    Ok(())
}
