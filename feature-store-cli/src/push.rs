//! `feature-store push`: rows of fresh values from a file into a view's
//! online store, its source's offline data, or both, with the library's
//! rules (types checked against the registry, never regress online).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::compute::concat_batches;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use feature_store::{FeatureStore, PushMode};

/// Reads `path` and pushes its rows to `view` as one batch.
pub(crate) async fn push(
    store: &FeatureStore,
    view: &str,
    path: &Path,
    mode: PushMode,
    json: bool,
) -> anyhow::Result<()> {
    let types = store.push_column_types(view).await?;
    let batch = read_rows(path, &types)?;
    let rows = batch.num_rows();
    let stats = store.push(view, &batch, mode).await?;
    let to = match mode {
        PushMode::Online => "online",
        PushMode::Offline => "offline",
        _ => "online_and_offline",
    };
    if json {
        return crate::output::json(&serde_json::json!({
            "view": view,
            "file": path,
            "rows": rows,
            "to": to,
            "written": stats.written,
            "skipped_older": stats.skipped_older,
        }));
    }
    let rows = if rows == 1 { "1 row".to_owned() } else { format!("{rows} rows") };
    match mode {
        PushMode::Offline => {
            println!("Pushed {rows} from {} to the offline data of feature view \"{view}\".", path.display())
        }
        _ => {
            println!(
                "Pushed {rows} from {} to feature view \"{view}\" ({to}): {} stored online, {} skipped online \
                 because a newer value was already there.",
                path.display(),
                stats.written,
                stats.skipped_older
            );
        }
    }
    Ok(())
}

/// Reads a Parquet, CSV (with a header) or JSON-lines file into one batch.
fn read_rows(path: &Path, types: &HashMap<String, DataType>) -> anyhow::Result<RecordBatch> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let (schema, batches) = if name.ends_with(".parquet") || name.ends_with(".pq") {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open()?)
            .and_then(|b| b.build())
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
        let schema = arrow_array::RecordBatchReader::schema(&reader);
        let batches = reader.collect::<Result<Vec<_>, _>>().with_context(|| format!("reading {}", path.display()))?;
        (schema, batches)
    } else if name.ends_with(".csv") {
        read_csv(path, open()?, types)?
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
        read_json_lines(path, open()?, types)?
    } else {
        bail!(
            "{}: push reads .parquet, .csv (with a header row) or .jsonl (one JSON object per line) files",
            path.display()
        );
    };
    let batch = concat_batches(&schema, &batches)?;
    if batch.num_rows() == 0 {
        bail!("{} holds no rows; nothing to push", path.display());
    }
    Ok(batch)
}

/// The file's columns, each with the registry's type where the registry
/// has one and the inferred type otherwise (the push then names it).
fn typed_schema(found: &Schema, types: &HashMap<String, DataType>) -> SchemaRef {
    Arc::new(Schema::new(
        found
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), types.get(f.name()).cloned().unwrap_or_else(|| f.data_type().clone()), true))
            .collect::<Vec<_>>(),
    ))
}

fn read_csv(
    path: &Path,
    mut file: File,
    types: &HashMap<String, DataType>,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (found, _) = format
        .infer_schema(&mut file, Some(1000))
        .with_context(|| format!("reading the header of {}", path.display()))?;
    if let Some(f) = found.fields().iter().find(|f| types.get(f.name()).is_some_and(DataType::is_nested)) {
        bail!(
            "{}: column \"{}\" holds lists, which CSV cannot carry; push it from Parquet or JSON lines",
            path.display(),
            f.name()
        );
    }
    let schema = typed_schema(&found, types);
    file.seek(SeekFrom::Start(0))?;
    let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema)).with_format(format).build(file)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        anyhow::anyhow!("{}: {}", path.display(), feature_store::readable_csv_error(&e.to_string(), &columns))
    })?;
    Ok((schema, batches))
}

fn read_json_lines(
    path: &Path,
    file: File,
    types: &HashMap<String, DataType>,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut reader = BufReader::new(file);
    let (found, _) = arrow::json::reader::infer_json_schema(&mut reader, Some(1000))
        .with_context(|| format!("{}: not JSON lines (one object per line)", path.display()))?;
    let schema = typed_schema(&found, types);
    let mut reader = reader.into_inner();
    reader.seek(SeekFrom::Start(0))?;
    let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build(BufReader::new(reader))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((schema, batches))
}
