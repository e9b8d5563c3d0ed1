//! Compaction of ingestion's offline log: runs of small files of one
//! folder and partition merged into one file named after the run's range,
//! which replaces them for every reader at once (`files` skips replaced
//! files); the inputs are deleted afterwards, and a killed compaction's
//! leftovers by the next one.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use feature_store_core::ingest::log_file::LogFileName;
use feature_store_core::model::DataSource;
use feature_store_core::offline::{CompactRequest, Compacted};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Error;
use crate::files::SourceFiles;
use crate::offline_store::ParquetOfflineStore;

/// One log file of a folder.
struct Entry<'a> {
    meta: &'a ObjectMeta,
    name: LogFileName,
}

impl ParquetOfflineStore {
    pub(crate) async fn compact_log_files(
        &self,
        source: &DataSource,
        request: &CompactRequest,
    ) -> CoreResult<Compacted> {
        let context = format!("compacting the offline log of stream source \"{}\" in {}", request.stream, source.path);
        let files = self.source_files_to_write(source).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
        let mut done = Compacted::default();
        let store = &files.root.store;
        let mine =
            |m: &ObjectMeta| m.location.filename().and_then(LogFileName::parse).filter(|n| n.source == request.stream);
        // A killed compaction's inputs: their merged file is being read instead.
        for m in &files.replaced {
            if mine(m).is_some() {
                delete(store.as_ref(), &m.location, &files, &mut done).await?;
            }
        }
        // Each partition's newest flush may be completed by a restart in
        // folders that lack it, under its name: never merged.
        let mut newest: BTreeMap<String, (u128, u128)> = BTreeMap::new();
        let mut folders: BTreeMap<(String, String), Vec<Entry<'_>>> = BTreeMap::new();
        for meta in &files.files {
            let Some(name) = mine(meta) else { continue };
            let e = newest.entry(name.partition.clone()).or_insert((name.first, name.last));
            if name.last > e.1 {
                *e = (name.first, name.last);
            }
            let folder = meta.location.as_ref().strip_suffix(meta.location.filename().unwrap_or_default());
            let key = (folder.unwrap_or_default().to_owned(), name.partition.clone());
            folders.entry(key).or_default().push(Entry { meta, name });
        }
        for ((folder, partition), mut entries) in folders {
            entries.sort_by_key(|e| e.name.first);
            let protected = newest.get(&partition).copied();
            // Runs of adjacent mergeable files: a merged range must not
            // cover a file left out, or readers would skip that file.
            let mut run: Vec<&Entry<'_>> = Vec::new();
            let mut runs: Vec<Vec<&Entry<'_>>> = Vec::new();
            let mut bytes = 0u64;
            for e in &entries {
                let mergeable = e.meta.size < request.small_bytes && Some((e.name.first, e.name.last)) != protected;
                if !mergeable || bytes + e.meta.size > request.max_bytes {
                    runs.push(std::mem::take(&mut run));
                    bytes = 0;
                }
                if mergeable {
                    bytes += e.meta.size;
                    run.push(e);
                }
            }
            runs.push(run);
            for run in runs.into_iter().filter(|r| r.len() >= request.min_files.max(2)) {
                let Some(rows) = self.merge(&files, &folder, &run, &context).await? else { continue };
                done.written += 1;
                done.rows += rows;
                for e in &run {
                    delete(store.as_ref(), &e.meta.location, &files, &mut done).await?;
                }
            }
        }
        Ok(done)
    }

    /// Writes the run's rows, in range order, as one file named after its
    /// whole range; returns its row count, or `None` when the files' columns
    /// disagree on a type (they are left as they are).
    async fn merge(
        &self,
        files: &SourceFiles,
        folder: &str,
        run: &[&Entry<'_>],
        context: &str,
    ) -> CoreResult<Option<u64>> {
        let store = &files.root.store;
        let mut batches: Vec<RecordBatch> = Vec::new();
        for e in run {
            let url = files.file_url(e.meta);
            let got = store.get(&e.meta.location).await.map_err(|err| unavailable(context, &url, err))?;
            let bytes = got.bytes().await.map_err(|err| unavailable(context, &url, err))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|err| {
                CoreError::data(context, Error::Parquet { location: url.clone(), source: err }.to_string())
            })?;
            for b in reader {
                batches.push(b.map_err(|err| CoreError::data(context, format!("{url}: {err}")))?);
            }
        }
        let schema = match union_schema(&batches) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(folder, why, "offline log: files left unmerged");
                return Ok(None);
            }
        };
        let aligned: Vec<RecordBatch> = batches
            .iter()
            .map(|b| align(b, &schema))
            .collect::<Result<_, _>>()
            .map_err(|err| CoreError::data(context, err.to_string()))?;
        let (first, last) = (run[0].name.first, run.iter().map(|e| e.name.last).max().expect("a run"));
        let name = LogFileName { first, last, ..run[0].name.clone() }.name();
        let path = Path::from(format!("{folder}{name}"));
        let url = format!("{}/{}", files.root.store_url(), path);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("a valid level")))
            .build();
        let mut buf = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buf, Arc::clone(&schema), Some(props))
            .map_err(|err| CoreError::data(context, err.to_string()))?;
        let mut rows = 0u64;
        for b in &aligned {
            rows += b.num_rows() as u64;
            writer.write(b).map_err(|err| CoreError::data(context, err.to_string()))?;
        }
        writer.close().map_err(|err| CoreError::data(context, err.to_string()))?;
        // One put: readers see the merged file whole or not at all.
        store.put(&path, bytes::Bytes::from(buf).into()).await.map_err(|err| unavailable(context, &url, err))?;
        tracing::debug!(file = %url, inputs = run.len(), rows, "offline log: merged");
        Ok(Some(rows))
    }
}

async fn delete(
    store: &dyn object_store::ObjectStore,
    path: &Path,
    files: &SourceFiles,
    done: &mut Compacted,
) -> CoreResult<()> {
    match store.delete(path).await {
        Ok(()) => {
            done.removed += 1;
            Ok(())
        }
        // Another compaction got there first.
        Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(unavailable("compacting the offline log", &format!("{}/{path}", files.root.store_url()), e)),
    }
}

fn unavailable(context: &str, url: &str, e: object_store::Error) -> CoreError {
    CoreError::StoreUnavailable { store: context.to_owned(), source: Box::new(Error::object_store(url, e)) }
}

/// Every column of every batch, by name, nullable (a file written before a
/// feature was added lacks it); the first type seen of a name wins, and a
/// name seen with another type is an error (the run is left unmerged).
fn union_schema(batches: &[RecordBatch]) -> Result<SchemaRef, String> {
    let mut fields: Vec<Field> = Vec::new();
    for b in batches {
        for f in b.schema().fields() {
            match fields.iter().find(|x| x.name() == f.name()) {
                Some(x) if x.data_type() != f.data_type() => {
                    return Err(format!(
                        "column \"{}\" is {} in one file and {} in another",
                        f.name(),
                        x.data_type(),
                        f.data_type()
                    ));
                }
                Some(_) => {}
                None => fields.push(f.as_ref().clone().with_nullable(true)),
            }
        }
    }
    let metadata = batches.first().map(|b| b.schema().metadata().clone()).unwrap_or_default();
    Ok(Arc::new(Schema::new_with_metadata(fields, metadata)))
}

fn align(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Arc::clone(c),
            None => arrow_array::new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Int64Array, RecordBatch};
    use feature_store_core::ingest::log_file::LogFileName;
    use feature_store_core::model::DataSource;
    use feature_store_core::offline::{CompactRequest, OfflineWriter};
    use object_store::ObjectStoreExt;

    use crate::ParquetOfflineStore;

    fn rows(values: impl IntoIterator<Item = i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(values)) as _)]).unwrap()
    }

    /// Every value the source's readable files hold, sorted, and their names.
    async fn read(store: &ParquetOfflineStore, source: &DataSource) -> (Vec<i64>, Vec<String>) {
        let files = store.source_files(source).await.unwrap();
        let (mut values, mut names) = (Vec::new(), Vec::new());
        for m in &files.files {
            names.push(m.location.to_string());
            let bytes = files.root.store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            for b in reader {
                values.extend(b.unwrap().column_by_name("x").unwrap().as_primitive::<Int64Type>().values().iter());
            }
        }
        values.sort_unstable();
        (values, names)
    }

    #[tokio::test]
    async fn runs_of_small_files_merge_and_the_rows_stay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = ParquetOfflineStore::new(dir.path(), BTreeMap::new());
        // A folder that does not exist yet: the first write creates it.
        let source = DataSource::builder("tx_batch", "log", "ts").build().unwrap();
        assert!(store.list_named(&source, "ingest-").await.unwrap().is_empty());
        store.append(&source, rows([0])).await.unwrap();
        // Partition "0": ten one-row files; "1": two; "2": a big file
        // between small ones.
        for p in 1..=10u128 {
            let name = LogFileName::format("tx", "0", p, p);
            assert!(store.append_named(&source, None, &name, vec![rows([p as i64])]).await.unwrap());
        }
        for p in [1u128, 2] {
            let name = LogFileName::format("tx", "1", p, p);
            store.append_named(&source, None, &name, vec![rows([100 + p as i64])]).await.unwrap();
        }
        for p in 1..=6u128 {
            let batch = if p == 3 { rows(1000..21_000) } else { rows([200 + p as i64]) };
            store.append_named(&source, None, &LogFileName::format("tx", "2", p, p), vec![batch]).await.unwrap();
        }
        // Another stream's files are never touched.
        for p in 1..=3u128 {
            store.append_named(&source, None, &LogFileName::format("ty", "0", p, p), vec![rows([300])]).await.unwrap();
        }
        let (before, _) = read(&store, &source).await;

        let mut request = CompactRequest::new("tx").with_min_files(2);
        request.small_bytes = 10_000;
        let done = store.compact_log(&source, &request).await.unwrap();
        let (after, names) = read(&store, &source).await;
        assert_eq!(after, before, "compaction changed the rows");
        let names: Vec<&str> = names.iter().map(|n| n.rsplit('/').next().unwrap()).collect();
        let log = |p: &str, a: u128, b: u128| LogFileName::format("tx", p, a, b);
        for kept in [
            log("0", 1, 9),
            log("0", 10, 10), // each partition's newest file stays
            log("1", 1, 1),   // a run of one: the other file is the newest
            log("1", 2, 2),
            log("2", 1, 2),
            log("2", 3, 3), // large: splits the runs, and no merged range covers it
            log("2", 4, 5),
            log("2", 6, 6),
        ] {
            assert!(names.contains(&kept.as_str()), "{kept} missing from {names:?}");
        }
        assert_eq!(names.iter().filter(|n| n.starts_with("ingest-ty-")).count(), 3);
        assert_eq!(names.len(), 1 + 8 + 3, "{names:?}");
        assert_eq!((done.written, done.removed, done.rows), (3, 13, 13));

        // A compaction killed between its merged file and the deletions:
        // readers skip the inputs at once, and the next compaction deletes them.
        store.append_named(&source, None, &log("0", 4, 4), vec![rows([4])]).await.unwrap();
        let files = store.source_files(&source).await.unwrap();
        assert_eq!(files.replaced.len(), 1);
        assert_eq!(read(&store, &source).await.0, before, "a replaced file was read");
        let done = store.compact_log(&source, &request).await.unwrap();
        assert_eq!((done.written, done.removed), (0, 1));
        assert!(store.source_files(&source).await.unwrap().replaced.is_empty());
    }
}
