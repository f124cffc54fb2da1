//! What can be wrong with the reference partner site's users file or its configuration.

use crate::partner::wire::{MAX_CURSOR_BYTES, MAX_DISPLAY_NAME_CHARS, MAX_POST_TEXT_BYTES};
use std::path::PathBuf;
use thiserror::Error;

/// Why a users file or a site configuration was refused.
#[derive(Debug, Error)]
pub enum DemoError {
    /// The file could not be read.
    #[error("cannot read users file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not TOML of the expected shape.
    #[error("users file is not valid: {message}")]
    Parse {
        /// The parser's explanation.
        message: String,
    },
    /// A username breaks the partner username rules.
    #[error("user {username:?}: {message}")]
    InvalidUsername {
        /// As written in the file.
        username: String,
        /// The rule it breaks.
        message: String,
    },
    /// Two users have the same name (compared without case).
    #[error("user {username:?} is listed twice (usernames are compared without case)")]
    DuplicateUser {
        /// The second occurrence, as written.
        username: String,
    },
    /// A display name is empty or too long.
    #[error(
        "user {username:?}: display name must be 1-{MAX_DISPLAY_NAME_CHARS} characters, not {n_chars}"
    )]
    InvalidDisplayName {
        /// The user.
        username: String,
        /// Its length in characters.
        n_chars: usize,
    },
    /// A password hash is not an argon2id PHC string.
    #[error("user {username:?}: password_hash is not an argon2id PHC string: {message}")]
    InvalidPasswordHash {
        /// The user.
        username: String,
        /// What is wrong with it.
        message: String,
    },
    /// A contact names no user of the file.
    #[error("user {username:?}: contact {contact:?} is not a user of this file")]
    UnknownContact {
        /// The user whose list it is.
        username: String,
        /// The contact as written.
        contact: String,
    },
    /// A contact is listed twice, or is the user itself.
    #[error("user {username:?}: contact {contact:?} is the user itself or listed twice")]
    RedundantContact {
        /// The user whose list it is.
        username: String,
        /// The contact as written.
        contact: String,
    },
    /// A post id is empty, too long or used twice.
    #[error("post {post_id:?}: post ids must be unique and 1-{MAX_CURSOR_BYTES} bytes")]
    InvalidPostId {
        /// The post id.
        post_id: String,
    },
    /// A post's author is not a user of the file.
    #[error("post {post_id:?}: author {author:?} is not a user of this file")]
    UnknownAuthor {
        /// The post.
        post_id: String,
        /// The author as written.
        author: String,
    },
    /// A post's text is too long.
    #[error("post {post_id:?}: text is {n_bytes} bytes, more than {MAX_POST_TEXT_BYTES}")]
    PostTextTooLong {
        /// The post.
        post_id: String,
        /// The text's length.
        n_bytes: usize,
    },
    /// The site id breaks the site id rules.
    #[error("{message}")]
    InvalidSiteId {
        /// The rule it breaks.
        message: String,
    },
    /// The shared secret is too short to be a secret.
    #[error("the shared secret is {n_bytes} bytes; it must be at least {min_bytes}")]
    SecretTooShort {
        /// Its length.
        n_bytes: usize,
        /// The least accepted.
        min_bytes: usize,
    },
    /// No IM server is authorised, or one authorised id is empty.
    #[error("at least one IM server id must be authorised, and none may be empty")]
    NoAuthorisedServer,
}
