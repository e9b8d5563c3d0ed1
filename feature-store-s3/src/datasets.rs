//! Object I/O for saved datasets: listing a source's files with their
//! versions, writing a stream as one Parquet object, and hashing objects.

use std::sync::Arc;

use feature_store_core::dataset::{ObjectInfo, hex};
use feature_store_core::historical::{BatchStream, EntityInput};
use feature_store_core::model::DataSource;
use feature_store_core::{Error as CoreError, Result as CoreResult};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::AsyncArrowWriter;
use sha2::{Digest, Sha256};

use crate::ParquetOfflineStore;
use crate::datafusion::{df_error, entity_plan, session};
use crate::error::Error;
use crate::location::{ResolvedLocation, resolve};

fn url_of(loc: &ResolvedLocation) -> String {
    format!("{}/{}", loc.store_url(), loc.path)
}

pub(crate) async fn source_files(store: &ParquetOfflineStore, source: &DataSource) -> CoreResult<Vec<ObjectInfo>> {
    let context = format!("data source \"{}\" ({})", source.name, source.path);
    let files = store.source_files(source).await.map_err(|e| CoreError::data(&context, e.to_string()))?;
    Ok(files
        .files
        .iter()
        .map(|m| ObjectInfo::new(files.file_url(m), m.size).with_version(m.e_tag.clone(), Some(m.last_modified)))
        .collect())
}

pub(crate) async fn read_entities(
    store: &ParquetOfflineStore,
    entities: EntityInput,
    timestamp_column: &str,
    sources: &[DataSource],
    keys: &[feature_store_core::model::JoinKey],
) -> CoreResult<BatchStream> {
    // One partition, as retrieval reads entity rows: the rows keep their order.
    let ctx = session(store.memory_limit, 1)?;
    let keys: Vec<&feature_store_core::model::JoinKey> = keys.iter().collect();
    let (plan, _) = entity_plan(store, &ctx, entities, timestamp_column, sources, &keys).await?;
    let schema = plan.schema();
    let stream = datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
        .map_err(|e| df_error("reading the entity table", e))?;
    Ok(BatchStream::new(schema, Box::pin(stream.map_err(|e| df_error("reading the entity table", e)))))
}

/// Streams `stream` into a multipart upload; a failed write aborts the upload,
/// so no partial object is left under `location`.
pub(crate) async fn write_parquet(
    store: &ParquetOfflineStore,
    location: &str,
    mut stream: BatchStream,
) -> CoreResult<ObjectInfo> {
    let loc = resolve(location, &store.base_dir, &store.options).map_err(CoreError::from)?;
    let url = url_of(&loc);
    let fail = |e: parquet::errors::ParquetError| CoreError::from(Error::Parquet { location: url.clone(), source: e });
    let object = object_store::buffered::BufWriter::new(Arc::clone(&loc.store), loc.path.clone());
    let mut writer = AsyncArrowWriter::try_new(object, stream.schema(), None).map_err(fail)?;
    let mut result = Ok(());
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(b) => {
                if let Err(e) = writer.write(&b).await {
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
    object_info(store, location)
        .await?
        .ok_or_else(|| CoreError::data(&url, "the object was written but cannot be found"))
}

pub(crate) async fn object_info(store: &ParquetOfflineStore, location: &str) -> CoreResult<Option<ObjectInfo>> {
    let loc = resolve(location, &store.base_dir, &store.options).map_err(CoreError::from)?;
    let url = url_of(&loc);
    let got = match loc.store.get(&loc.path).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::object_store(&url, e).into()),
    };
    let meta = got.meta.clone();
    let mut bytes = got.into_stream();
    let mut digest = Sha256::new();
    while let Some(chunk) = bytes.next().await {
        digest.update(chunk.map_err(|e| CoreError::from(Error::object_store(&url, e)))?);
    }
    Ok(Some(
        ObjectInfo::new(url, meta.size)
            .with_version(meta.e_tag, Some(meta.last_modified))
            .with_sha256(hex(&digest.finalize())),
    ))
}

pub(crate) async fn put_object(
    store: &ParquetOfflineStore,
    location: &str,
    bytes: bytes::Bytes,
) -> CoreResult<ObjectInfo> {
    let loc = resolve(location, &store.base_dir, &store.options).map_err(CoreError::from)?;
    let url = url_of(&loc);
    let sha = hex(&Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let put =
        loc.store.put(&loc.path, bytes.into()).await.map_err(|e| CoreError::from(Error::object_store(&url, e)))?;
    Ok(ObjectInfo::new(url, size).with_version(put.e_tag, None).with_sha256(sha))
}

pub(crate) async fn get_object(store: &ParquetOfflineStore, location: &str) -> CoreResult<Option<bytes::Bytes>> {
    let loc = resolve(location, &store.base_dir, &store.options).map_err(CoreError::from)?;
    let url = url_of(&loc);
    match loc.store.get(&loc.path).await {
        Ok(g) => Ok(Some(g.bytes().await.map_err(|e| CoreError::from(Error::object_store(&url, e)))?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::object_store(&url, e).into()),
    }
}

pub(crate) async fn delete_object(store: &ParquetOfflineStore, location: &str) -> CoreResult<bool> {
    let loc = resolve(location, &store.base_dir, &store.options).map_err(CoreError::from)?;
    let url = url_of(&loc);
    // A store that deletes missing objects silently (S3) is asked first.
    match loc.store.head(&loc.path).await {
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(Error::object_store(&url, e).into()),
        Ok(_) => {}
    }
    match loc.store.delete(&loc.path).await {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(Error::object_store(&url, e).into()),
    }
}
