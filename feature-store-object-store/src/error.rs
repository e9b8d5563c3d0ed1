//! The one public error type of this crate, mapped into the core error.

use feature_store_core::Error as CoreError;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors raised while resolving locations and reading or writing objects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A location could not be understood.
    #[error("invalid location \"{location}\": {message}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// A storage option key or value is not accepted.
    #[error("storage option \"{key}\": {message}")]
    InvalidOption {
        /// The option key.
        key: String,
        /// What is wrong.
        message: String,
    },

    /// Nothing exists at a location.
    #[error("{location}: {message}")]
    NotFound {
        /// The location.
        location: String,
        /// What was looked for.
        message: String,
    },

    /// The object store failed.
    #[error("{location}: {source}")]
    ObjectStore {
        /// The location involved.
        location: String,
        /// The object_store error.
        #[source]
        source: object_store::Error,
    },

    /// Local file I/O failed.
    #[error("{location}: {source}")]
    Io {
        /// The file.
        location: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An object_store failure at `location`.
    pub fn object_store(location: impl Into<String>, source: object_store::Error) -> Self {
        Self::ObjectStore { location: location.into(), source }
    }
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidLocation { .. } | Error::InvalidOption { .. } => CoreError::InvalidArgument(e.to_string()),
            Error::NotFound { location, message } => CoreError::data(location, message),
            Error::ObjectStore { location, source } => match source {
                object_store::Error::NotFound { .. } => CoreError::data(location, "not found"),
                object_store::Error::Generic { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => {
                    CoreError::StoreUnavailable { store: location, source: Box::new(source) }
                }
                other => CoreError::backend(location, other),
            },
            Error::Io { location, source } => CoreError::backend(location, source),
        }
    }
}
