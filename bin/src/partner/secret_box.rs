//! Partner secrets at rest: the HMAC secret a site shares with this server is needed in the
//! clear to sign requests, so it cannot be hashed; it is sealed with ChaCha20-Poly1305 under
//! the cluster's `partners.secrets_key` before it is stored in the registry, and opened only
//! on the node that signs a request. The site id is the associated data, so a sealed secret
//! copied to another site does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use thiserror::Error;

/// Bytes of the key (`partners.secrets_key` is 64 hex digits).
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;

/// Why a secret could not be sealed or opened.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretBoxError {
    /// The key is not 64 hex digits.
    #[error("partners.secrets_key must be {} hex digits", KEY_BYTES * 2)]
    BadKey,
    /// No randomness for a nonce.
    #[error("no randomness for a nonce")]
    NoRandomness,
    /// The sealed bytes do not open under this key for this site.
    #[error("the sealed secret does not open with this key for this site")]
    DoesNotOpen,
}

/// Seals and opens partner secrets under one key.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box under the key given as 64 hex digits.
    pub fn from_hex(key_hex: &str) -> Result<Self, SecretBoxError> {
        let key_bytes = hex::decode(key_hex.trim()).map_err(|_| SecretBoxError::BadKey)?;
        if key_bytes.len() != KEY_BYTES {
            return Err(SecretBoxError::BadKey);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key_bytes)),
        })
    }

    /// Seals `secret` for `site_id`: a random nonce followed by the ciphertext and tag.
    pub fn seal(&self, site_id: &str, secret: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let mut nonce_bytes = [0_u8; NONCE_BYTES];
        getrandom::fill(&mut nonce_bytes).map_err(|_| SecretBoxError::NoRandomness)?;
        let payload = Payload {
            msg: secret,
            aad: site_id.as_bytes(),
        };
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), payload)
            .map_err(|_| SecretBoxError::DoesNotOpen)?;
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens what [`Self::seal`] gave for `site_id`.
    pub fn open(&self, site_id: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let (nonce_bytes, ciphertext) = sealed
            .split_at_checked(NONCE_BYTES)
            .ok_or(SecretBoxError::DoesNotOpen)?;
        let payload = Payload {
            msg: ciphertext,
            aad: site_id.as_bytes(),
        };
        self.cipher
            .decrypt(Nonce::from_slice(nonce_bytes), payload)
            .map_err(|_| SecretBoxError::DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_secrets_open_only_for_their_site_and_key() {
        let secret_box = SecretBox::from_hex(KEY).unwrap();
        let sealed = secret_box.seal("forum", b"shared secret").unwrap();
        assert!(!sealed.windows(6).any(|window| window == b"shared"));
        assert_eq!(secret_box.open("forum", &sealed).unwrap(), b"shared secret");
        assert_ne!(sealed, secret_box.seal("forum", b"shared secret").unwrap());
        assert_eq!(
            secret_box.open("other", &sealed),
            Err(SecretBoxError::DoesNotOpen)
        );
        let other_key = SecretBox::from_hex(&KEY.replace("00", "ff")).unwrap();
        assert_eq!(
            other_key.open("forum", &sealed),
            Err(SecretBoxError::DoesNotOpen)
        );
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            secret_box.open("forum", &tampered),
            Err(SecretBoxError::DoesNotOpen)
        );
        assert_eq!(
            secret_box.open("forum", &sealed[..5]),
            Err(SecretBoxError::DoesNotOpen)
        );
    }

    #[test]
    fn keys_must_be_64_hex_digits() {
        for bad in [
            "",
            "00",
            &KEY[..62],
            &format!("{KEY}00"),
            &KEY.replace('0', "g"),
        ] {
            assert!(
                matches!(SecretBox::from_hex(bad), Err(SecretBoxError::BadKey)),
                "{bad}"
            );
        }
    }
}
