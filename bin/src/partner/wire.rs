//! The partner-site protocol, version 1 (docs/partner-api.md): the JSON bodies the IM server
//! posts to a partner site and the answers it accepts, with the limits both sides enforce.
//!
//! Every request carries this server's id, the site id, a unix timestamp and a fresh nonce,
//! and is signed (see [`crate::partner::signing`]). A partner answers `200` with
//! `"result": "ok"` and a signed body echoing the nonce, or `4xx` with a [`Refusal`]; `5xx`
//! means it is unavailable.

use serde::{Deserialize, Serialize};

/// The header carrying a body's signature, in both directions.
pub const SIGNATURE_HEADER: &str = "x-lanmesh-signature";
/// Path (under the site's endpoint URL) that verifies credentials.
pub const VERIFY_PATH: &str = "verify";
/// Path that lists a user's contacts.
pub const CONTACTS_PATH: &str = "contacts";
/// Path that lists posts for a user.
pub const POSTS_PATH: &str = "posts";
/// Largest request body a partner needs to accept.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Most contacts in one page.
pub const MAX_CONTACTS_PAGE: u32 = 100;
/// Most posts in one page.
pub const MAX_POSTS_PAGE: u32 = 50;
/// Longest post text, bytes.
pub const MAX_POST_TEXT_BYTES: usize = 4096;
/// Longest display name, characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest paging cursor or post id, bytes.
pub const MAX_CURSOR_BYTES: usize = 256;

/// Asks the site to check a user's credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// The IM server asking (the site must have authorised it).
    pub server_id: String,
    /// The site asked.
    pub site_id: String,
    /// Unix seconds when the request was made.
    pub timestamp: u64,
    /// 32 hex digits, never reused.
    pub nonce: String,
    /// As the user typed it.
    pub username: String,
    /// As the user typed it.
    pub password: String,
}

/// Asks the site for one page: of a user's contacts (`/contacts`) or of the posts chosen for a
/// user, newest first (`/posts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// The IM server asking.
    pub server_id: String,
    /// The site asked.
    pub site_id: String,
    /// Unix seconds when the request was made.
    pub timestamp: u64,
    /// 32 hex digits, never reused.
    pub nonce: String,
    /// The site's canonical username (from the verify answer): whose contacts, or the reader
    /// the posts are chosen for.
    pub username: String,
    /// Where to continue; `None` for the first page.
    pub cursor: Option<String>,
    /// Most items wanted (at most [`MAX_CONTACTS_PAGE`] or [`MAX_POSTS_PAGE`]).
    pub limit: u32,
}

/// `"ok"` or `"refused"`: read first, to know which body follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerResult {
    /// The request succeeded.
    Ok,
    /// The request was refused; the body is a [`Refusal`].
    Refused,
}

/// The part every answer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerHead {
    /// Ok or refused.
    pub result: AnswerResult,
}

/// Why a partner refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Wrong username or password (or no such user).
    BadCredentials,
    /// The site has not authorised this IM server id.
    UnknownServer,
    /// The signature does not match the body.
    BadSignature,
    /// The timestamp is outside the site's window.
    StaleTimestamp,
    /// The nonce was seen before.
    ReplayedNonce,
    /// The user named in a contacts or posts request does not exist.
    UnknownUser,
    /// The body is not a valid request.
    BadRequest,
}

/// A refusal (HTTP 4xx).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Always [`AnswerResult::Refused`].
    pub result: AnswerResult,
    /// The request's nonce when the site could read it.
    pub nonce: Option<String>,
    /// Why.
    pub reason: RefusalReason,
    /// For people.
    pub message: String,
}

/// The credentials check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyAdmitted {
    /// Always [`AnswerResult::Ok`].
    pub result: AnswerResult,
    /// The request's nonce, echoed.
    pub nonce: String,
    /// The site's canonical form of the username; the IM account is linked to it.
    pub username: String,
    /// Shown to the user's IM friends.
    pub display_name: String,
}

/// A contact of the user on the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerContact {
    /// The contact's canonical username on the site.
    pub username: String,
    /// Its display name.
    pub display_name: String,
}

/// One page of contacts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactsPage {
    /// Always [`AnswerResult::Ok`].
    pub result: AnswerResult,
    /// The request's nonce, echoed.
    pub nonce: String,
    /// At most the request's limit.
    pub contacts: Vec<PartnerContact>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A post published on the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerPost {
    /// The site's id of the post.
    pub post_id: String,
    /// The author's canonical username on the site.
    pub author: String,
    /// The text, at most [`MAX_POST_TEXT_BYTES`].
    pub text: String,
    /// Unix seconds.
    pub published_at: u64,
}

/// One page of posts, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostsPage {
    /// Always [`AnswerResult::Ok`].
    pub result: AnswerResult,
    /// The request's nonce, echoed.
    pub nonce: String,
    /// At most the request's limit.
    pub posts: Vec<PartnerPost>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}
