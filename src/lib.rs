//! A [`tower`](https://docs.rs/tower) middleware that keeps clients of the Kero API authenticated.
//!
//! [`KeroAuthLayer`] wraps any `Service<http::Request<B>>` (a hyper-util client, a tonic channel, a
//! stack with retry and timeout layers). Every request leaves with the `token` header; the token
//! is fetched from a [`TokenSource`] once at a time however many requests need it, refreshed in the
//! background before it expires, renewed when the server answers 401, and the rejected request is
//! replayed once with the new token.
//!
//! ```
//! use kero_auth::{source, KeroAuthLayer, Token};
//! use http::{Request, Response};
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let layer = KeroAuthLayer::new(source::from_fn(|_current: Option<Token>| async {
//!     Ok::<_, std::io::Error>(Token::expiring_in(
//!         "my-token",
//!         Duration::from_secs(24 * 3600),
//!         "my-refresh-token",
//!         Duration::from_secs(180 * 24 * 3600),
//!     ))
//! }));
//!
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(
//!     |req: Request<kero_auth::ReplayBody<Empty<Bytes>>>| async move {
//!         assert_eq!(req.headers()["token"], "my-token");
//!         Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
//!     },
//! ));
//!
//! let response = svc.oneshot(Request::new(Empty::<Bytes>::new())).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(())
//! # }
//! ```
//!
//! See the README for the options, their defaults and the semantics promised.

#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod cache;
mod classify;
mod error;
mod future;
mod layer;
#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub mod mock;
mod service;
pub mod source;
mod token;

pub use body::ReplayBody;
pub use classify::AuthFailureClassifier;
pub use error::{BoxError, Error, InvalidToken, SourceError};
pub use future::ResponseFuture;
pub use layer::{Builder, KeroAuthLayer, Stats, DEFAULT_HEADER};
pub use service::KeroAuth;
pub use source::TokenSource;
pub use token::Token;

/// The README's code, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
