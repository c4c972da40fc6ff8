//! Reading an answer of `/auth` or `/refresh` into a [`Token`] or a [`KeroError`].
//!
//! Everything here is pure (bytes in, result out), so it is fuzzed and property-tested on its
//! own. Nothing here panics on any input, and no error message quotes the body.

use std::time::SystemTime;

use http::StatusCode;

use super::error::{ApiError, KeroError, Malformed};
use crate::token::{is_header_safe, unix_seconds};
use crate::Token;

/// Which route answered: a 401/403 from `/auth` means bad credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Auth,
    Refresh,
}

/// Reads an answer. `server_time` is the answer's `Date` header, if it had a valid one.
pub(crate) fn read_answer(
    route: Route,
    status: StatusCode,
    server_time: Option<SystemTime>,
    body: &[u8],
) -> Result<Token, KeroError> {
    if !status.is_success() {
        let api = ApiError::from_body(status, body).unwrap_or_else(|| ApiError::bare(status));
        return Err(classify(route, api));
    }
    // An error body can arrive with a 2xx status: a JSON object with a string `status` and no
    // `auth_token` is an error, whatever the HTTP status says.
    if let Some(api) = ApiError::from_body(status, body) {
        if !looks_like_token(body) {
            return Err(classify(route, api));
        }
    }
    let token: Token = serde_json::from_slice(body)
        .map_err(|e| KeroError::Malformed(Malformed::Json(describe(&e))))?;
    if !is_header_safe(token.auth_token()) {
        return Err(KeroError::Malformed(Malformed::NotHeaderSafe("auth_token")));
    }
    if !is_header_safe(token.refresh_token()) {
        return Err(KeroError::Malformed(Malformed::NotHeaderSafe(
            "refresh_token",
        )));
    }
    let now = unix_seconds(server_time.unwrap_or_else(SystemTime::now));
    if token.access_expires_at() <= now {
        return Err(KeroError::Malformed(Malformed::AlreadyExpired));
    }
    Ok(match server_time {
        Some(t) => token.with_server_time(t),
        None => token,
    })
}

fn looks_like_token(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .is_ok_and(|m| m.contains_key("auth_token"))
}

fn classify(route: Route, api: ApiError) -> KeroError {
    if api.is_invalid_source_host() {
        KeroError::InvalidSourceHost(api)
    } else if route == Route::Auth
        && matches!(
            api.http_status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    {
        KeroError::InvalidCredentials(api)
    } else {
        KeroError::Api(api)
    }
}

/// A serde error, said without quoting the input (a wrong-typed field could hold a secret).
fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => {
            format!("not valid JSON (line {}, column {})", e.line(), e.column())
        }
        Category::Data => {
            let msg = e.to_string();
            match msg.strip_prefix("missing field ") {
                Some(rest) => format!(
                    "missing field {}",
                    rest.split(" at line").next().unwrap_or(rest)
                ),
                None => format!(
                    "a field has the wrong type or value (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            }
        }
        Category::Io => "could not be read".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_700_000_000;

    fn at_now() -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(NOW))
    }

    fn ok(body: &str) -> Result<Token, KeroError> {
        read_answer(Route::Auth, StatusCode::OK, at_now(), body.as_bytes())
    }

    #[test]
    fn reads_a_token_and_its_server_time() {
        let t = ok(r#"{"auth_token":"a.b.c","access_expires_at":1700086400,"refresh_token":"d.e.f","refresh_expires_at":1715000000,"extra":1}"#).unwrap();
        assert_eq!(t.auth_token(), "a.b.c");
        assert_eq!(t.access_remaining(), Some(Duration::from_secs(86_400)));
        assert_eq!(t.server_time(), at_now());
    }

    #[test]
    fn malformed_answers_are_clear_errors_that_quote_nothing() {
        let cases = [
            ("not json at all", "not valid JSON"),
            (
                r#"{"auth_token":"a","access_expires_at":1700086400,"refresh_token":"r"}"#,
                "missing field `refresh_expires_at`",
            ),
            (
                r#"{"auth_token":"a","access_expires_at":"secret-ish","refresh_token":"r","refresh_expires_at":1}"#,
                "wrong type",
            ),
            (
                r#"{"auth_token":"a","access_expires_at":1.5,"refresh_token":"r","refresh_expires_at":1}"#,
                "wrong type",
            ),
            (
                r#"{"auth_token":"has space","access_expires_at":1700086400,"refresh_token":"r","refresh_expires_at":1}"#,
                "auth_token",
            ),
            (
                r#"{"auth_token":"caf\u00e9","access_expires_at":1700086400,"refresh_token":"r","refresh_expires_at":1}"#,
                "auth_token",
            ),
            (
                r#"{"auth_token":"a","access_expires_at":1700086400,"refresh_token":"","refresh_expires_at":1}"#,
                "refresh_token",
            ),
            (
                r#"{"auth_token":"a","access_expires_at":1700000000,"refresh_token":"r","refresh_expires_at":1}"#,
                "already past",
            ),
            ("[]", "wrong type"),
            ("", "not valid JSON"),
        ];
        for (body, want) in cases {
            let err = ok(body).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeroError::Malformed(_)), "{body}: {err:?}");
            assert!(msg.contains(want), "{body}: {msg}");
            assert!(
                !msg.contains("secret-ish") && !msg.contains("has space"),
                "{msg}"
            );
            assert!(err.is_retryable());
        }
    }

    #[test]
    fn error_answers_are_typed_whatever_their_status() {
        let ish = r#"{"code":1,"status":"INVALID SOURCE HOST","msg":"any message here","data":"additional data"}"#;
        for status in [
            StatusCode::FORBIDDEN,
            StatusCode::OK,
            StatusCode::UNAUTHORIZED,
        ] {
            let err = read_answer(Route::Refresh, status, None, ish.as_bytes()).unwrap_err();
            let KeroError::InvalidSourceHost(api) = &err else {
                panic!("{err:?}")
            };
            assert_eq!(api.code, Some(1));
            assert_eq!(api.msg.as_deref(), Some("any message here"));
            assert_eq!(api.data, Some(serde_json::json!("additional data")));
            assert!(err.to_string().contains("whitelist"));
            assert!(!err.is_retryable());
        }
        let creds = read_answer(
            Route::Auth,
            StatusCode::UNAUTHORIZED,
            None,
            br#"{"status":"INVALID CREDENTIALS"}"#,
        );
        assert!(matches!(creds, Err(KeroError::InvalidCredentials(_))));
        let refused = read_answer(
            Route::Refresh,
            StatusCode::UNAUTHORIZED,
            None,
            br#"{"status":"INVALID REFRESH TOKEN"}"#,
        );
        assert!(
            matches!(&refused, Err(KeroError::Api(a)) if a.http_status == 401 && !refused.as_ref().unwrap_err().is_retryable())
        );
        let down = read_answer(
            Route::Auth,
            StatusCode::BAD_GATEWAY,
            None,
            b"<html>bad gateway</html>",
        )
        .unwrap_err();
        assert!(
            matches!(&down, KeroError::Api(a) if a.status == "Bad Gateway" && a.code.is_none())
        );
        assert!(down.is_retryable());
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics_or_leaks(status in 100u16..600, body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let status = StatusCode::from_u16(status).unwrap();
            for route in [Route::Auth, Route::Refresh] {
                if let Err(e) = read_answer(route, status, at_now(), &body) {
                    let _ = (e.to_string(), format!("{e:?}"), e.is_retryable());
                }
            }
        }

        #[test]
        fn json_shaped_noise_never_panics(
            auth in "\\PC{0,40}", refresh in "\\PC{0,40}",
            exp in proptest::num::i64::ANY, rexp in proptest::num::i64::ANY, with_status in proptest::bool::ANY,
        ) {
            let mut v = serde_json::json!({
                "auth_token": auth, "access_expires_at": exp,
                "refresh_token": refresh, "refresh_expires_at": rexp,
            });
            if with_status {
                v["status"] = serde_json::json!("SOMETHING");
            }
            let body = v.to_string();
            match read_answer(Route::Auth, StatusCode::OK, at_now(), body.as_bytes()) {
                Ok(t) => {
                    proptest::prop_assert!(is_header_safe(t.auth_token()) && is_header_safe(t.refresh_token()));
                    proptest::prop_assert!(t.access_expires_at() > NOW as i64);
                }
                Err(e) => proptest::prop_assert!(!e.to_string().contains(&auth) || auth.len() < 4),
            }
        }
    }
}
