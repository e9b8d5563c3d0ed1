//! Local files for the query engine, with ranged reads served from a memory
//! map.
//!
//! The engine reads Parquet column chunks as byte ranges. `LocalFileSystem`
//! copies each range into a freshly zeroed buffer; on a training-set join
//! those buffers were a fifth of all page faults (each new page zeroed by the
//! kernel, then by the buffer, then overwritten). A mapped range borrows the
//! page cache instead: no copy, and a fault maps many pages at once.
//!
//! A map reflects the file as it is: a file truncated by another program
//! while it is read makes the process fault (`SIGBUS`), as with any memory
//! map (Polars and LMDB share this; the README tells users to replace source
//! files by renaming). Only ranged reads use maps; everything else (listing,
//! whole reads, writes) goes to `LocalFileSystem`.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, Result,
};

/// `LocalFileSystem` with ranged reads from memory maps.
#[derive(Debug, Default)]
pub(crate) struct MappedLocalFiles {
    inner: LocalFileSystem,
}

impl MappedLocalFiles {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { inner: LocalFileSystem::new() })
    }
}

impl std::fmt::Display for MappedLocalFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedLocalFiles")
    }
}

fn generic(path: &std::path::Path, e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    if let Some(io) = (&e as &dyn std::error::Error).downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::NotFound
    {
        return object_store::Error::NotFound { path: path.display().to_string(), source: Box::new(e) };
    }
    object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) }
}

fn out_of_range(path: &std::path::Path, range: &Range<u64>, len: u64) -> object_store::Error {
    let message = format!("{}: range {range:?} is past the end of the file ({len} bytes)", path.display());
    object_store::Error::Generic { store: "LocalFileSystem", source: message.into() }
}

#[async_trait]
impl ObjectStore for MappedLocalFiles {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let ranges = ranges.to_vec();
        tokio::task::spawn_blocking(move || {
            let file = File::open(&path).map_err(|e| generic(&path, e))?;
            let len = file.metadata().map_err(|e| generic(&path, e))?.len();
            if let Some(r) = ranges.iter().find(|r| r.end > len || r.start > r.end) {
                return Err(out_of_range(&path, r, len));
            }
            if len == 0 {
                return Ok(ranges.iter().map(|_| Bytes::new()).collect());
            }
            // SAFETY: the map is read-only and private to this process; see
            // the module docs for files truncated while mapped.
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| generic(&path, e))?;
            let whole = Bytes::from_owner(map);
            Ok(ranges.iter().map(|r| whole.slice(r.start as usize..r.end as usize)).collect())
        })
        .await
        .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[allow(clippy::single_range_in_vec_init)] // a list of one range is the point
    async fn ranges_come_from_the_file_and_bad_ranges_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"0123456789").unwrap();
        let store = MappedLocalFiles::new();
        let path = Path::from_absolute_path(&file).unwrap();
        let got = store.get_ranges(&path, &[0..3, 7..10, 5..5]).await.unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"012"), Bytes::from_static(b"789"), Bytes::new()]);
        let err = store.get_ranges(&path, &[8..11]).await.unwrap_err();
        assert!(err.to_string().contains("past the end of the file (10 bytes)"), "{err}");
        let missing = Path::from_absolute_path(dir.path().join("nope")).unwrap();
        let err = store.get_ranges(&missing, &[0..1]).await.unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        let got = store.get_ranges(&Path::from_absolute_path(&empty).unwrap(), &[0..0]).await.unwrap();
        assert_eq!(got, vec![Bytes::new()]);
    }
}
