//! What an RPC caller can get back instead of a result.

/// Why a call did not produce a result. `E` is the service's own error type
/// (what its handler returned), carried across the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError<E = String> {
    /// The deadline passed; the server dropped the handler if it was still
    /// running. Retrying with a longer timeout may succeed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// No live instance of the service is known.
    #[error("no instance of service {service:?} is available; is a server running and reachable?")]
    NoInstance {
        /// The service.
        service: String,
    },
    /// The call was cancelled.
    #[error("the call was cancelled")]
    Cancelled,
    /// The service's own error.
    // Debug, not Display: any serde error type can be shown, raw bodies too.
    #[error("the service returned an error: {0:?}")]
    Application(E),
    /// The instance does not serve this method.
    #[error("service {service:?} has no method {method:?}")]
    UnknownMethod {
        /// Service.
        service: String,
        /// Method.
        method: String,
    },
    /// The request (or the reply) did not decode as the method's type.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The server failed in a way that is not the service's own error
    /// (a handler panicked, or the reply was malformed).
    #[error("server error: {0}")]
    Internal(String),
    /// The router's permissions do not let this node call (or serve) the
    /// service. Not retryable: the permissions file must change.
    #[error("{}", crate::error::permission_message(*op, service, denied_by.as_deref()))]
    PermissionDenied {
        /// `Call` (or `Serve`).
        op: crate::security::Operation,
        /// The service.
        service: String,
        /// The deny pattern that refused it, when known.
        denied_by: Option<String>,
    },
    /// The messaging layer failed.
    #[error("transport: {0}")]
    Transport(crate::Error),
}

impl<E> From<crate::Error> for RpcError<E> {
    /// A permission error becomes [`RpcError::PermissionDenied`]; anything
    /// else is [`RpcError::Transport`].
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::PermissionDenied {
                op,
                subject,
                denied_by,
            } => RpcError::PermissionDenied {
                op,
                service: subject,
                denied_by,
            },
            e => RpcError::Transport(e),
        }
    }
}

impl<E> RpcError<E> {
    /// True when another attempt (elsewhere, or later) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RpcError::NoInstance { .. } | RpcError::Transport(_))
    }

    /// Maps the application error type.
    pub fn map_app<F>(self, f: impl FnOnce(E) -> F) -> RpcError<F> {
        self.try_map_app(|e| Ok(f(e)))
    }

    /// Maps the application error, which may turn into another error (a
    /// body that does not decode).
    pub(crate) fn try_map_app<F>(self, f: impl FnOnce(E) -> Result<F, RpcError<F>>) -> RpcError<F> {
        match self {
            RpcError::DeadlineExceeded => RpcError::DeadlineExceeded,
            RpcError::NoInstance { service } => RpcError::NoInstance { service },
            RpcError::Cancelled => RpcError::Cancelled,
            RpcError::Application(e) => f(e).map_or_else(|e| e, RpcError::Application),
            RpcError::UnknownMethod { service, method } => {
                RpcError::UnknownMethod { service, method }
            }
            RpcError::BadRequest(m) => RpcError::BadRequest(m),
            RpcError::Internal(m) => RpcError::Internal(m),
            RpcError::PermissionDenied {
                op,
                service,
                denied_by,
            } => RpcError::PermissionDenied {
                op,
                service,
                denied_by,
            },
            RpcError::Transport(t) => RpcError::Transport(t),
        }
    }
}
