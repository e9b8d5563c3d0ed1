//! The one public error type of this crate, mapped into the core error.

use feature_store_core::Error as CoreError;
use feature_store_object_store::Error as StorageError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised while finding and reading Parquet sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Resolving a location or an object-store call failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// A Parquet file could not be read.
    #[error("{location}: not a readable Parquet file: {source}")]
    Parquet {
        /// The file.
        location: String,
        /// The parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// Writing a Parquet file failed (a full disk, a lost connection); the
    /// partial upload was aborted.
    #[error("{location}: writing failed, nothing was kept there: {source}")]
    ParquetWrite {
        /// The file.
        location: String,
        /// The parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
}

impl Error {
    pub(crate) fn object_store(location: impl Into<String>, source: object_store::Error) -> Self {
        Self::Storage(StorageError::object_store(location, source))
    }

    pub(crate) fn not_found(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Storage(StorageError::NotFound { location: location.into(), message: message.into() })
    }

    pub(crate) fn invalid_location(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Storage(StorageError::InvalidLocation { location: location.into(), message: message.into() })
    }
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(e) => e.into(),
            Error::Parquet { .. } | Error::ParquetWrite { .. } => CoreError::data("parquet", e.to_string()),
        }
    }
}
