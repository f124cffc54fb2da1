//! Names in partner login: site ids, the usernames sites hand back, and the IM account id a
//! partner identity is linked to: `SITE~USERNAME`. Native usernames cannot contain `~`, so the
//! two kinds of account never collide, and two concurrent first logins of one partner user
//! land on the same account.

/// Separates the site id from the site's username in a linked account id.
pub const ACCOUNT_SEPARATOR: char = '~';

/// Checks a site id: 2 to 32 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit.
pub fn validate_site_id(site_id: &str) -> Result<(), String> {
    let chars_ok = site_id
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
    let starts_ok = site_id
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_alphanumeric());
    if (2..=32).contains(&site_id.len()) && chars_ok && starts_ok {
        Ok(())
    } else {
        Err(format!(
            "site id {site_id:?} must be 2-32 characters of a-z, 0-9, '-' and start with a letter or digit"
        ))
    }
}

/// Checks a username as a site gives it back: 1 to 64 characters of `A-Z`, `a-z`, `0-9` and
/// `. _ - @ +`.
pub fn validate_partner_username(username: &str) -> Result<(), String> {
    let chars_ok = username
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"._-@+".contains(&byte));
    if (1..=64).contains(&username.len()) && chars_ok {
        Ok(())
    } else {
        Err(format!(
            "partner username {username:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-', '@', '+'"
        ))
    }
}

/// The IM account linked to `username` on `site_id` (both already validated).
pub fn linked_account_id(site_id: &str, username: &str) -> String {
    format!("{site_id}{ACCOUNT_SEPARATOR}{username}")
}

/// Splits a linked account id into (site id, username); `None` for a native account or a
/// malformed id.
pub fn split_linked_account(account: &str) -> Option<(&str, &str)> {
    let (site_id, username) = account.split_once(ACCOUNT_SEPARATOR)?;
    let valid = validate_site_id(site_id).is_ok() && validate_partner_username(username).is_ok();
    valid.then_some((site_id, username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_ids() {
        for good in ["ab", "forum-1", "0x"] {
            assert_eq!(validate_site_id(good), Ok(()), "{good}");
        }
        for bad in ["a", "-ab", "Forum", "a~b", "a b", &"a".repeat(33)] {
            assert!(validate_site_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partner_usernames() {
        for good in ["b", "Bob.Smith", "bob+im@example.org", "x_-"] {
            assert_eq!(validate_partner_username(good), Ok(()), "{good}");
        }
        for bad in ["", "a~b", "a:b", "a b", "ü", &"a".repeat(65)] {
            assert!(validate_partner_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn linked_accounts_round_trip() {
        let account = linked_account_id("forum", "Bob");
        assert_eq!(account, "forum~Bob");
        assert_eq!(split_linked_account(&account), Some(("forum", "Bob")));
        assert_eq!(split_linked_account("bob"), None);
        assert_eq!(split_linked_account("x~bob"), None);
        assert_eq!(split_linked_account("forum~a:b"), None);
    }
}
