//! The error type of this crate.

use std::time::Duration;

use feature_store_core::Error as CoreError;

/// Errors of the Redis online store; mapped into the core error at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `online_store` options are invalid.
    #[error("online_store (redis): {0}")]
    Config(String),
    /// Redis answered with an error or the connection failed.
    #[error("{store}: {source}")]
    Redis {
        /// Which store (its address).
        store: String,
        /// The client error.
        #[source]
        source: redis::RedisError,
    },
    /// No reply within the configured timeout.
    #[error("{store}: no reply within {after:?} (online_store.timeout)")]
    Timeout {
        /// Which store.
        store: String,
        /// The configured timeout.
        after: Duration,
    },
    /// A stored value is not in the layout this crate writes.
    #[error("{store}: key {key}: {message}")]
    Layout {
        /// Which store.
        store: String,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl From<Error> for CoreError {
    /// The store's name goes into the core error once; its source is the
    /// client's error, so a printed chain does not repeat the name.
    fn from(e: Error) -> Self {
        match e {
            Error::Config(m) => CoreError::Config { location: "online_store".into(), message: m },
            Error::Timeout { ref store, .. } => {
                CoreError::StoreUnavailable { store: store.clone(), source: Box::new(e) }
            }
            Error::Redis { store, source }
                if source.is_io_error()
                    || source.is_connection_refusal()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_unrecoverable_error() =>
            {
                CoreError::StoreUnavailable { store, source: Box::new(source) }
            }
            Error::Redis { store, source } => CoreError::Backend { context: store, source: Box::new(source) },
            Error::Layout { ref store, .. } => CoreError::Backend { context: store.clone(), source: Box::new(e) },
        }
    }
}
