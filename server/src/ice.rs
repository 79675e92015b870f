//! ICE servers handed to browsers: STUN URLs as configured, and TURN with short-lived
//! credentials in the TURN REST style that coturn checks with `use-auth-secret`:
//! `username = "<unix expiry>:<user>"`, `credential = base64(HMAC-SHA1(secret, username))`.
//! The TURN server needs only the shared secret; nothing is stored per credential.

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use serde::Serialize;

/// One entry of `RTCConfiguration.iceServers`, as browsers take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (absent for STUN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A TURN REST credential valid until `expires_at_s` (unix seconds) for `user`.
#[must_use]
pub fn turn_credential(secret: &str, user: &str, expires_at_s: u64) -> (String, String) {
    let username = format!("{expires_at_s}:{user}");
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let credential = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_or_else(
        |_| String::new(),
        |mut mac| {
            mac.update(username.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        },
    );
    (username, credential)
}

/// The ICE servers for a browser: STUN always; TURN only when `turn_user` is given (the caller
/// checked the browser holds a valid invite) and a secret is configured.
#[must_use]
pub fn ice_servers(
    settings: &crate::config::Settings,
    turn_user: Option<&str>,
    now_s: u64,
) -> Vec<IceServer> {
    let mut out = Vec::new();
    if !settings.stun_urls.is_empty() {
        out.push(IceServer {
            urls: settings.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    if let (Some(user), Some(secret), false) = (
        turn_user,
        settings.turn_secret.as_deref(),
        settings.turn_urls.is_empty(),
    ) {
        let (username, credential) =
            turn_credential(secret, user, now_s.saturating_add(settings.turn_ttl_s));
        out.push(IceServer {
            urls: settings.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_is_the_rest_api_hmac() {
        // Reference value computed independently with
        // `printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64`.
        let (user, pass) = turn_credential("north", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
        let (_, other) = turn_credential("south", "alice", 1_700_000_000);
        assert_ne!(pass, other, "the secret matters");
    }

    #[test]
    fn turn_only_for_invited_callers_with_a_secret() {
        let mut s = crate::config::Settings {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret: Some("k".into()),
            turn_ttl_s: 600,
            ..crate::config::Settings::default()
        };
        assert_eq!(ice_servers(&s, None, 1000).len(), 1, "STUN only");
        let both = ice_servers(&s, Some("u"), 1000);
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].username.as_deref(), Some("1600:u"));
        s.turn_secret = None;
        assert_eq!(
            ice_servers(&s, Some("u"), 1000).len(),
            1,
            "no secret, no TURN"
        );
    }
}
