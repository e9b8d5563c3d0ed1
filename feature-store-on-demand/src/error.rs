//! This crate's error type.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the expression engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A function could not be registered (a name taken by a built-in function, say).
    #[error("cannot register function \"{name}\": {message}")]
    Registration {
        /// The function's name.
        name: String,
        /// Why.
        message: String,
    },
}

impl From<Error> for feature_store_core::Error {
    fn from(e: Error) -> Self {
        feature_store_core::Error::InvalidArgument(e.to_string())
    }
}
