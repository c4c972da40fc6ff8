//! What counts as an authentication failure: the response that makes the layer refresh its token
//! and replay the request.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};

/// Decides whether a response says "your token was not accepted".
///
/// The default, [`AuthFailureClassifier::http_unauthorized`], is HTTP 401, which is what the
/// Kero API answers for a missing, expired or revoked token. Only the response head (status and
/// headers) is looked at: the body is never read to classify.
///
/// ```
/// use kero_auth::AuthFailureClassifier;
/// use http::{HeaderMap, StatusCode};
///
/// let c = AuthFailureClassifier::custom(|status, _headers| status == StatusCode::FORBIDDEN);
/// assert!(c.is_auth_failure(StatusCode::FORBIDDEN, &HeaderMap::new()));
/// assert!(!c.is_auth_failure(StatusCode::UNAUTHORIZED, &HeaderMap::new()));
/// ```
#[derive(Clone)]
pub struct AuthFailureClassifier(Kind);

type CustomFn = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

#[derive(Clone)]
enum Kind {
    Unauthorized,
    Grpc,
    Custom(Arc<CustomFn>),
}

impl AuthFailureClassifier {
    /// HTTP 401 Unauthorized (the default).
    pub fn http_unauthorized() -> Self {
        AuthFailureClassifier(Kind::Unauthorized)
    }

    /// HTTP 401, or a gRPC `UNAUTHENTICATED` status (`grpc-status: 16`) in the response headers,
    /// which is where a gRPC server puts it when it rejects a call before sending any message
    /// (a "trailers-only" response). A status that only arrives in trailers, after messages
    /// were streamed, cannot trigger a replay.
    pub fn grpc_unauthenticated() -> Self {
        AuthFailureClassifier(Kind::Grpc)
    }

    /// Any rule over the response's status and headers.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        AuthFailureClassifier(Kind::Custom(Arc::new(f)))
    }

    /// Whether a response with this status and these headers is an authentication failure.
    #[inline]
    pub fn is_auth_failure(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.0 {
            Kind::Unauthorized => status == StatusCode::UNAUTHORIZED,
            Kind::Grpc => {
                status == StatusCode::UNAUTHORIZED
                    || headers
                        .get("grpc-status")
                        .is_some_and(|v| v.as_bytes() == b"16")
            }
            Kind::Custom(f) => f(status, headers),
        }
    }
}

impl Default for AuthFailureClassifier {
    fn default() -> Self {
        Self::http_unauthorized()
    }
}

impl fmt::Debug for AuthFailureClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            Kind::Unauthorized => "http_unauthorized",
            Kind::Grpc => "grpc_unauthenticated",
            Kind::Custom(_) => "custom",
        };
        f.debug_tuple("AuthFailureClassifier").field(&name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_401_only() {
        let c = AuthFailureClassifier::default();
        let h = HeaderMap::new();
        assert!(c.is_auth_failure(StatusCode::UNAUTHORIZED, &h));
        assert!(!c.is_auth_failure(StatusCode::FORBIDDEN, &h));
        assert!(!c.is_auth_failure(StatusCode::OK, &h));
    }

    #[test]
    fn grpc_reads_trailers_only_status() {
        let c = AuthFailureClassifier::grpc_unauthenticated();
        let mut h = HeaderMap::new();
        assert!(!c.is_auth_failure(StatusCode::OK, &h));
        h.insert("grpc-status", "16".parse().unwrap());
        assert!(c.is_auth_failure(StatusCode::OK, &h));
        h.insert("grpc-status", "7".parse().unwrap());
        assert!(!c.is_auth_failure(StatusCode::OK, &h));
    }
}
