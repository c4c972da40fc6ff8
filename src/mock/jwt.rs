//! JWT-shaped tokens for the mock server: `base64url(header).base64url(payload).base64url(sig)`,
//! signed with HMAC-SHA256 under a key drawn at random for each server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Which of the pair a token is (the `type` claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Access,
    Refresh,
}

impl Kind {
    fn claim(self) -> &'static str {
        match self {
            Kind::Access => "ACCESS",
            Kind::Refresh => "REFRESH",
        }
    }
}

/// Signs tokens. Holds a random key and a random server id (so two servers never issue the same
/// token); neither is ever printed.
pub(crate) struct Signer {
    key: [u8; 32],
    server_id: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        for b in &mut key {
            *b = fastrand::u8(..);
        }
        Signer {
            key,
            server_id: fastrand::u64(..),
        }
    }

    /// A token of `kind`, unique by `serial`, whose `exp` claim is `exp`.
    pub(crate) fn token(
        &self,
        kind: Kind,
        serial: u64,
        iat: i64,
        exp: i64,
        username: &str,
    ) -> String {
        const HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
        let payload = serde_json::json!({
            "authorized": true,
            "chat_banned_till": 0,
            "currency": "USD",
            "exp": exp,
            "iat": iat,
            "is_banned": false,
            "is_white_listed": true,
            "jti": format!("{:016x}-{serial}", self.server_id),
            "partner_name": "kero-mock-partner",
            "system_name": "kero-mock",
            "type": kind.claim(),
            "user_id": 1,
            "user_token": format!("{:016x}", self.server_id.rotate_left(17) ^ 0x6b65_726f),
            "user_topic": "user-1",
            "username": username,
        });
        let mut token = URL_SAFE_NO_PAD.encode(HEADER);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload.to_string()));
        let signature = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(token.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            // HMAC takes keys of any length; this arm is never taken.
            Err(_) => Vec::new(),
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        token
    }
}
