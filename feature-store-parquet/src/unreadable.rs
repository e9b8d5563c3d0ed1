//! Which file a failed read could not decode. DataFusion's Parquet reader
//! reports a corrupt page ("dictionary index out of bounds") without the
//! file it was reading; a source may hold thousands. So after a read of
//! sources fails that way, their files are decoded again one by one and the
//! first that fails is named. This runs only on that error path: its cost
//! is one more read of the sources' files at most.

use std::sync::Arc;

use feature_store_core::Error as CoreError;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::files::SourceFiles;

/// Whether `e` is a decoding failure that names no file.
fn names_no_file(e: &CoreError) -> bool {
    matches!(e, CoreError::Data { message, .. } if message.contains("Parquet") && !message.contains("://"))
}

/// Decodes every row group of `meta` (read whole: this is the error path);
/// the error, as text, if it does not decode.
async fn decode(files: &SourceFiles, meta: &ObjectMeta) -> Result<(), String> {
    let bytes = files
        .root
        .store
        .get(&meta.location)
        .await
        .map_err(|e| e.to_string())?
        .bytes()
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        for batch in reader {
            batch.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The URL of the first of `files` that does not decode, and why.
pub(crate) async fn first_unreadable(files: &SourceFiles) -> Option<(String, String)> {
    for meta in &files.files {
        if let Err(why) = decode(files, meta).await {
            return Some((files.file_url(meta), why));
        }
    }
    None
}

/// `error`, naming the first file of `sources` that does not decode when
/// `error` is a decoding failure that names none (unchanged otherwise, and
/// when every file decodes: the failure was elsewhere).
pub(crate) async fn name_the_file(error: CoreError, sources: &[SourceFiles]) -> CoreError {
    if !names_no_file(&error) {
        return error;
    }
    for files in sources {
        if let Some((url, why)) = first_unreadable(files).await {
            let CoreError::Data { context, .. } = error else { unreachable!("checked above") };
            return CoreError::data(context, format!("{url} does not decode: {why}"));
        }
    }
    error
}

/// `stream`, its decoding failures naming the file of `sources` that does
/// not decode (see [`name_the_file`]).
pub(crate) fn naming_files(
    stream: feature_store_core::historical::BatchStream,
    sources: Arc<Vec<SourceFiles>>,
) -> feature_store_core::historical::BatchStream {
    let schema = stream.schema();
    let named = stream.or_else(move |e| {
        let sources = Arc::clone(&sources);
        async move { Err(name_the_file(e, &sources).await) }
    });
    feature_store_core::historical::BatchStream::new(schema, Box::pin(named))
}
