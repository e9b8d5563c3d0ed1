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

/// The first line of `path` (1-based) that is not one JSON object, and why.
fn first_bad_json_line(path: &Path) -> Option<(usize, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).find_map(|(i, l)| {
        match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v.is_object() => None,
            Ok(_) => Some((i + 1, "a JSON value that is not an object".to_owned())),
            Err(e) => Some((i + 1, e.to_string())),
        }
    })
}

/// Refuses a JSON column whose values the registry's type would cast:
/// JSON's reader turns `2.7` into the integer 2 and `"0.2"` into a number,
/// where every other push path refuses them. A JSON number without a
/// fraction is fine for a float feature (JSON has one number type).
fn check_json_types(path: &Path, found: &Schema, types: &HashMap<String, DataType>) -> anyhow::Result<()> {
    for f in found.fields() {
        let Some(want) = types.get(f.name()) else { continue };
        let has = f.data_type();
        let what = match has {
            DataType::Utf8 | DataType::LargeUtf8 => "text",
            DataType::Float64 => "numbers with a fraction",
            DataType::Int64 => "integers",
            DataType::Boolean => "true/false",
            _ => continue,
        };
        let fits = match want {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => matches!(has, DataType::Int64),
            DataType::Float32 | DataType::Float64 => matches!(has, DataType::Int64 | DataType::Float64),
            DataType::Utf8 | DataType::LargeUtf8 => matches!(has, DataType::Utf8 | DataType::LargeUtf8),
            DataType::Boolean => matches!(has, DataType::Boolean),
            // Times (ISO text or epoch numbers), bytes and lists are read by their own rules.
            _ => true,
        };
        if !fits {
            let declared =
                feature_store::ValueType::from_arrow(want).map_or_else(|| want.to_string(), |t| t.to_string());
            bail!(
                "{}: column \"{}\" holds {what} ({}), but it is declared {declared}; values are never cast (write them as {declared})",
                path.display(),
                f.name(),
                feature_store::describe_arrow(has)
            );
        }
    }
    Ok(())
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
    // Every line, so that a value anywhere that the declared type would
    // have to cast (2.7 for an int64, "0.2" for a float) is found.
    let (found, _) = match arrow::json::reader::infer_json_schema(&mut reader, None) {
        Ok(found) => found,
        // The reader's position is within a line; name the file's line.
        Err(e) => match first_bad_json_line(path) {
            Some((line, why)) => bail!("{}: line {line} is not a JSON object: {why}", path.display()),
            None => bail!("{}: not JSON lines (one object per line): {e}", path.display()),
        },
    };
    check_json_types(path, &found, types)?;
    let schema = typed_schema(&found, types);
    let mut reader = reader.into_inner();
    reader.seek(SeekFrom::Start(0))?;
    let reader = arrow::json::ReaderBuilder::new(Arc::clone(&schema)).build(BufReader::new(reader))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((schema, batches))
}
