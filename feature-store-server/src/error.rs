//! The crate's error type, and how every failure becomes an HTTP status with
//! a JSON body (or a gRPC status): never a 500 with a backtrace.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use feature_store_core::Error as CoreError;

/// Errors of starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (flag, `feature_server:` key) is invalid.
    #[error("feature server config {key}: {message}")]
    Config {
        /// The setting, as written in `feature_store.yaml` or on the command line.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key could not be read or used.
    #[error("TLS {path}: {message}")]
    Tls {
        /// The file involved.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The store failed while starting (first registry read).
    #[error(transparent)]
    Store(#[from] CoreError),
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config { key: key.into(), message: message.into() }
    }
}

/// A request that failed: the status and the message for the JSON body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    /// Short machine-readable category (`not_found`, `invalid_argument`, ...).
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The gRPC status matching this error.
    pub(crate) fn to_grpc(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self.status {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
                Code::InvalidArgument
            }
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::CONFLICT => Code::Aborted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
            StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
            _ => Code::Internal,
        };
        tonic::Status::new(code, self.message.clone())
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let message = e.to_string();
        let (status, kind) = match &e {
            // An unknown feature is a bad request; an unknown view or service is a missing resource.
            CoreError::NotFound { kind: "feature" | "column", .. } => (StatusCode::BAD_REQUEST, "invalid_argument"),
            CoreError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            CoreError::InvalidArgument(_) | CoreError::Data { .. } | CoreError::Invalid { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_argument")
            }
            CoreError::Unsupported(_) => (StatusCode::BAD_REQUEST, "unsupported"),
            CoreError::StoreUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            CoreError::CorruptRegistry { .. } => (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable"),
            CoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %message, "request failed");
        }
        Self { status, kind, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "kind": self.kind, "status": self.status.as_u16() });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_grpc()
    }
}
