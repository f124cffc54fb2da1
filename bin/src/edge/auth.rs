//! Credentials at the edge: argon2id password hashing (on the blocking pool, never on the
//! reactor), auth keys (random, handed out once, stored only as SHA-256), username rules and
//! the per-address login rate limit.
//!
//! An auth key reads `ACCOUNT:SESSION:SECRET`: the account and session say where to check it,
//! the 256-bit secret is what proves it. Only `sha256(SECRET)` is ever stored or sent between
//! nodes. A fast hash is right for a random 256-bit secret (there is nothing to brute-force);
//! passwords, which people choose, get argon2id.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes of randomness in a key's secret.
const SECRET_BYTES: usize = 32;

/// argon2id cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
}

/// Why a password could not be hashed or checked.
#[derive(Debug, Error)]
pub enum PasswordError {
    /// The configured cost is not valid for argon2.
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The blocking pool is gone (the node is stopping).
    #[error("password hashing task failed")]
    Task,
}

fn hasher(cost: PasswordCost) -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, None)
        .map_err(|error| PasswordError::Params(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with argon2id and a random salt; returns the PHC string.
pub async fn hash_password(password: String, cost: PasswordCost) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let mut salt_bytes = [0_u8; 16];
        getrandom::fill(&mut salt_bytes).map_err(|error| PasswordError::Hash(error.to_string()))?;
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|error| PasswordError::Hash(error.to_string()))?;
        hasher(cost)?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| PasswordError::Hash(error.to_string()))
    })
    .await
    .map_err(|_| PasswordError::Task)?
}

/// Checks a password against a PHC string (the cost is read from the string).
pub async fn verify_password(password: String, phc: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return Ok(false);
        };
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|_| PasswordError::Task)?
}

/// A PHC string no password matches, verified when the account does not exist so that the
/// answer takes as long as for a wrong password (no account probing by timing).
pub async fn dummy_hash(cost: PasswordCost) -> Result<String, PasswordError> {
    hash_password("not a password anyone has".to_owned(), cost).await
}

/// An auth key split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// The account it belongs to.
    pub account: String,
    /// The session.
    pub session_id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
}

/// A new key: the text for the client and its stored hash.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// `ACCOUNT:SESSION:SECRET`, handed to the client once.
    pub text: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
}

/// Hex SHA-256 of a key's secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Issues a key for `session_id` of `account`.
pub fn issue_key(account: &str, session_id: &str) -> Result<IssuedKey, getrandom::Error> {
    let mut secret_bytes = [0_u8; SECRET_BYTES];
    getrandom::fill(&mut secret_bytes)?;
    let secret = hex::encode(secret_bytes);
    Ok(IssuedKey {
        text: format!("{account}:{session_id}:{secret}"),
        secret_hash: hash_secret(&secret),
    })
}

/// Splits a key; `None` when it is not shaped like one of ours.
pub fn parse_key(text: &str) -> Option<ParsedKey> {
    let mut parts = text.split(':');
    let (Some(account), Some(session_id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let secret_ok =
        secret.len() == SECRET_BYTES * 2 && secret.bytes().all(|b| b.is_ascii_hexdigit());
    if validate_account_id(account).is_err()
        || session_id.is_empty()
        || session_id.len() > 64
        || !secret_ok
    {
        return None;
    }
    Some(ParsedKey {
        account: account.to_owned(),
        session_id: session_id.to_owned(),
        secret_hash: hash_secret(secret),
    })
}

/// Checks a username and returns its canonical (lower-case) form, which is the account id.
pub fn validate_username(username: &str) -> Result<String, String> {
    let canonical = username.to_ascii_lowercase();
    let length_ok = (3..=32).contains(&canonical.len());
    let chars_ok = canonical
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte));
    let starts_ok = canonical
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_alphanumeric());
    if length_ok && chars_ok && starts_ok {
        Ok(canonical)
    } else {
        Err(format!(
            "username {username:?} must be 3-32 characters of a-z, 0-9, '.', '_', '-' and start with a letter or digit"
        ))
    }
}

/// Checks an account id: a native account's canonical username, or `SITE~USERNAME` for an
/// account linked to a partner site (kept as it is: the site's usernames may use capitals).
pub fn validate_account_id(account: &str) -> Result<String, String> {
    if account.contains(crate::partner::identity::ACCOUNT_SEPARATOR) {
        crate::partner::identity::split_linked_account(account)
            .map(|_| account.to_owned())
            .ok_or_else(|| {
                format!(
                    "account {account:?} is neither a username nor SITE~USERNAME of a partner site"
                )
            })
    } else {
        validate_username(account)
    }
}

/// A token bucket per client address: `per_minute` attempts refilled evenly, up to
/// `per_minute` at once.
#[derive(Debug)]
pub struct AddressLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Addresses tracked before idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl AddressLimiter {
    /// A limiter allowing `per_minute` attempts per address.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `address`; `Err(wait)` when none is left.
    pub fn try_acquire(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_ADDRESSES {
            buckets.retain(|_, (_, last)| now.duration_since(*last) < Duration::from_secs(60));
        }
        let (tokens, last) = buckets.entry(address).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_COST: PasswordCost = PasswordCost {
        memory_kib: 64,
        iterations: 1,
    };

    #[tokio::test]
    async fn passwords_verify_only_themselves() {
        let phc = hash_password("correct horse".to_owned(), TEST_COST)
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(
            verify_password("correct horse".to_owned(), phc.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse".to_owned(), phc)
                .await
                .unwrap()
        );
        assert!(
            !verify_password("x".to_owned(), "not a phc".to_owned())
                .await
                .unwrap()
        );
    }

    #[test]
    fn keys_parse_back_to_their_parts() {
        let issued = issue_key("alice", "s1").unwrap();
        let parsed = parse_key(&issued.text).unwrap();
        assert_eq!(parsed.account, "alice");
        assert_eq!(parsed.session_id, "s1");
        assert_eq!(parsed.secret_hash, issued.secret_hash);
        let other = issue_key("alice", "s1").unwrap();
        assert_ne!(other.secret_hash, issued.secret_hash);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let check = |text: &str| assert_eq!(parse_key(text), None, "{text}");
        check("");
        check("alice");
        check("alice:s1");
        check("alice:s1:short");
        check(&format!("alice:s1:{}", "g".repeat(64)));
        check(&format!("alice::{}", "a".repeat(64)));
        check(&format!("Al ice:s1:{}", "a".repeat(64)));
        check(&format!("alice:s1:{}:extra", "a".repeat(64)));
    }

    #[test]
    fn usernames_are_canonical_and_checked() {
        let check = |input: &str, expected: Option<&str>| {
            assert_eq!(
                validate_username(input).ok().as_deref(),
                expected,
                "{input}"
            );
        };
        check("Alice", Some("alice"));
        check("bob.smith_2-x", Some("bob.smith_2-x"));
        check("ab", None);
        check(&"a".repeat(33), None);
        check(".alice", None);
        check("al ice", None);
        check("alice:x", None);
        check("álice", None);
    }

    #[test]
    fn address_limit_refills_over_time() {
        let limiter = AddressLimiter::new(3);
        let address: IpAddr = "127.0.0.7".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.try_acquire(address, start).is_ok());
        }
        let wait = limiter.try_acquire(address, start).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        let other: IpAddr = "127.0.0.8".parse().unwrap();
        assert!(limiter.try_acquire(other, start).is_ok());
        assert!(
            limiter
                .try_acquire(address, start + Duration::from_secs(20))
                .is_ok()
        );
    }
}
