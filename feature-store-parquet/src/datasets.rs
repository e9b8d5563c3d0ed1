//! The saved-datasets capability of the Parquet store: listing a source's
//! files with their versions, reading entity tables, writing a stream as one
//! Parquet object; whole-object I/O is `feature-store-object-store`'s.

use std::sync::Arc;

use async_trait::async_trait;
use feature_store_core::historical::{BatchStream, EntityInput};
use feature_store_core::model::{DataSource, JoinKey};
use feature_store_core::offline::{DatasetStorage, ObjectInfo};
use feature_store_core::{Error as CoreError, Result as CoreResult};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::AsyncArrowWriter;

use crate::ParquetOfflineStore;
use crate::datafusion::{df_error, entity_plan, session};
use crate::error::Error;

#[async_trait]
impl DatasetStorage for ParquetOfflineStore {
    async fn source_files(&self, source: &DataSource) -> CoreResult<Vec<ObjectInfo>> {
        let context = format!("data source \"{}\" ({})", source.name, source.path);
        let files = self.source_files(source).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
        Ok(files
            .files
            .iter()
            .map(|m| ObjectInfo::new(files.file_url(m), m.size).with_version(m.e_tag.clone(), Some(m.last_modified)))
            .collect())
    }

    async fn read_entities(
        &self,
        entities: EntityInput,
        timestamp_column: &str,
        sources: &[DataSource],
        keys: &[JoinKey],
    ) -> CoreResult<BatchStream> {
        // One partition, as retrieval reads entity rows: the rows keep their order.
        let ctx = session(self.memory_limit, 1)?;
        let keys: Vec<&JoinKey> = keys.iter().collect();
        let entities = self.resolve_entities(entities, sources).await?;
        let (plan, _) = entity_plan(&ctx, entities, timestamp_column, &keys).await?;
        let schema = plan.schema();
        let stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
            .map_err(|e| df_error("reading the entity table", e))?;
        Ok(BatchStream::new(schema, Box::pin(stream.map_err(|e| df_error("reading the entity table", e)))))
    }

    /// Streams `stream` into a multipart upload; a failed write aborts the
    /// upload, so no partial object is left under `location`.
    async fn write_parquet(&self, location: &str, mut stream: BatchStream) -> CoreResult<ObjectInfo> {
        let loc = self.blobs.resolve(location)?;
        let url = feature_store_object_store::blobs::url_of(&loc);
        let fail = |e: parquet::errors::ParquetError| {
            CoreError::from(Error::ParquetWrite { location: url.clone(), source: e })
        };
        // The upload buffer (10 MiB by default) is cut to 1/16 of a limit.
        let capacity = self.memory_limit.map_or(10 << 20, |m| (m / 16).clamp(1 << 20, 10 << 20));
        let object =
            object_store::buffered::BufWriter::with_capacity(Arc::clone(&loc.store), loc.path.clone(), capacity);
        let props = output_properties(&stream.schema(), self.memory_limit);
        let mut writer = AsyncArrowWriter::try_new(object, stream.schema(), Some(props)).map_err(fail)?;
        // Under a memory limit, row groups are cut at 1/16 of it: the writer
        // buffers a whole row group's encoded columns.
        let max_group_bytes = self.memory_limit.map_or(usize::MAX, |m| (m / 16).max(4 << 20));
        let mut result = Ok(());
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(b) => {
                    let mut written = writer.write(&b).await;
                    if written.is_ok() && writer.in_progress_size() >= max_group_bytes {
                        written = writer.flush().await;
                    }
                    if let Err(e) = written {
                        result = Err(fail(e));
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            // Dropping the writer drops the multipart upload without completing it.
            drop(writer);
            return Err(e);
        }
        writer.close().await.map_err(fail)?;
        self.blobs
            .object_info(location)
            .await?
            .ok_or_else(|| CoreError::data(&url, "the object was written but cannot be found"))
    }

    async fn put_object(&self, location: &str, bytes: bytes::Bytes) -> CoreResult<ObjectInfo> {
        self.blobs.put_object(location, bytes).await
    }

    async fn get_object(&self, location: &str) -> CoreResult<Option<bytes::Bytes>> {
        self.blobs.get_object(location).await
    }

    async fn delete_object(&self, location: &str) -> CoreResult<bool> {
        self.blobs.delete_object(location).await
    }

    async fn list_objects(&self, location: &str) -> CoreResult<Vec<String>> {
        self.blobs.list_objects(location).await
    }

    fn location_url(&self, location: &str) -> CoreResult<String> {
        self.blobs.location_url(location)
    }

    async fn object_info(&self, location: &str) -> CoreResult<Option<ObjectInfo>> {
        self.blobs.object_info(location).await
    }
}

/// Parquet's defaults, except that under a memory limit the columns'
/// dictionaries (and their hash tables) share 1/16 of it instead of growing
/// to a MiB each.
fn output_properties(
    schema: &datafusion::arrow::datatypes::Schema,
    memory_limit: Option<usize>,
) -> parquet::file::properties::WriterProperties {
    let mut b = parquet::file::properties::WriterProperties::builder();
    if let Some(m) = memory_limit {
        let columns = schema.fields().len().max(1);
        b = b.set_dictionary_page_size_limit((m / 16 / columns).clamp(8 << 10, 1 << 20));
    }
    b.build()
}
