//! Signatures of partner-protocol bodies: `v1=` and the hex HMAC-SHA256 of the exact body
//! bytes under the secret the IM provider and the site share. Both directions use it, so a
//! site knows the request came from this server and the server knows the answer came from the
//! site.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The scheme prefix of a signature header value.
const SCHEME_PREFIX: &str = "v1=";

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// The signature header value for `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed(secret);
    mac.update(body);
    format!(
        "{SCHEME_PREFIX}{}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` (compared in constant time).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(digest) = header
        .strip_prefix(SCHEME_PREFIX)
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
    else {
        return false;
    };
    let mut mac = keyed(secret);
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// A fresh nonce: 128 random bits as 32 hex digits.
pub fn new_nonce() -> Result<String, getrandom::Error> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Whether `nonce` has the form [`new_nonce`] gives.
pub fn is_nonce(nonce: &str) -> bool {
    nonce.len() == 32 && nonce.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_rfc_4231_and_bind_key_and_body() {
        // RFC 4231, test case 2.
        let signature = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "v1=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &signature));
        assert!(!verify(
            b"Jeff",
            b"what do ya want for nothing?",
            &signature
        ));
        assert!(!verify(
            b"Jefe",
            b"what do ya want for nothing!",
            &signature
        ));
        let bare = signature.trim_start_matches(SCHEME_PREFIX);
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", bare));
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", "v1=zz"));
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", ""));
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let first = new_nonce().unwrap();
        let second = new_nonce().unwrap();
        assert!(is_nonce(&first) && is_nonce(&second));
        assert_ne!(first, second);
        assert!(!is_nonce("abc"));
        assert!(!is_nonce(&"g".repeat(32)));
    }
}
