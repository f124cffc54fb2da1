//! The reference partner site's users file: who can log in (argon2id hashes), their contacts
//! and the posts they published, read from TOML and checked against the protocol's limits.

use super::DemoError;
use crate::edge::auth::PasswordCost;
use crate::partner::identity::validate_partner_username;
use crate::partner::wire::{
    MAX_CURSOR_BYTES, MAX_DISPLAY_NAME_CHARS, MAX_POST_TEXT_BYTES, PartnerContact, PartnerPost,
};
use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Params};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The cost of the dummy hash when the file has no user to copy it from (the cost
/// `lanmesh hash-password` uses).
const DEFAULT_PASSWORD_COST: PasswordCost = PasswordCost {
    memory_kib: 19_456,
    iterations: 2,
};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    posts: Vec<PostEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    display_name: String,
    password_hash: String,
    #[serde(default)]
    contacts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostEntry {
    post_id: String,
    author: String,
    text: String,
    published_at: u64,
}

/// One user of the site.
#[derive(Debug, Clone)]
pub(super) struct DemoUser {
    /// The canonical username (as in the file).
    pub(super) username: String,
    /// Shown to the user's IM friends.
    pub(super) display_name: String,
    /// argon2id PHC string.
    pub(super) password_hash: String,
    /// Indices into the users, in file order.
    contact_indices: Vec<usize>,
}

/// The users of the reference site, their contacts and the posts published on it.
#[derive(Debug, Clone)]
pub struct DemoUsers {
    users: Vec<DemoUser>,
    index_by_folded_username: HashMap<String, usize>,
    posts_newest_first: Vec<PartnerPost>,
    password_cost: PasswordCost,
}

/// Reads and checks a users file.
pub fn load_users(path: &Path) -> Result<DemoUsers, DemoError> {
    let text = std::fs::read_to_string(path).map_err(|source| DemoError::Read {
        path: path.to_owned(),
        source,
    })?;
    DemoUsers::from_toml_str(&text)
}

/// The key usernames are matched by: case does not matter.
fn folded(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// The cost read from an argon2id PHC string, or why it is not one.
fn argon2id_cost(phc: &str) -> Result<PasswordCost, String> {
    let parsed = PasswordHash::new(phc).map_err(|error| error.to_string())?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!("algorithm is {}, not argon2id", parsed.algorithm));
    }
    if parsed.hash.is_none() {
        return Err("it has no hash output".to_owned());
    }
    let params = Params::try_from(&parsed).map_err(|error| error.to_string())?;
    Ok(PasswordCost {
        memory_kib: params.m_cost(),
        iterations: params.t_cost(),
    })
}

impl DemoUsers {
    /// Parses and checks the text of a users file.
    pub fn from_toml_str(text: &str) -> Result<Self, DemoError> {
        let file: UsersFile = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|error| DemoError::Parse {
                message: error.to_string(),
            })?;
        let mut demo_users = Self::check_users(file.users)?;
        demo_users.posts_newest_first = demo_users.check_posts(file.posts)?;
        Ok(demo_users)
    }

    /// The users of `entries`, with no posts yet.
    fn check_users(entries: Vec<UserEntry>) -> Result<Self, DemoError> {
        let mut index_by_folded_username = HashMap::with_capacity(entries.len());
        let mut password_cost_opt = None;
        for (index, entry) in entries.iter().enumerate() {
            validate_partner_username(&entry.username).map_err(|message| {
                DemoError::InvalidUsername {
                    username: entry.username.clone(),
                    message,
                }
            })?;
            if index_by_folded_username
                .insert(folded(&entry.username), index)
                .is_some()
            {
                return Err(DemoError::DuplicateUser {
                    username: entry.username.clone(),
                });
            }
            let n_chars = entry.display_name.chars().count();
            if !(1..=MAX_DISPLAY_NAME_CHARS).contains(&n_chars) {
                return Err(DemoError::InvalidDisplayName {
                    username: entry.username.clone(),
                    n_chars,
                });
            }
            let cost = argon2id_cost(&entry.password_hash).map_err(|message| {
                DemoError::InvalidPasswordHash {
                    username: entry.username.clone(),
                    message,
                }
            })?;
            password_cost_opt.get_or_insert(cost);
        }
        let mut users = Vec::with_capacity(entries.len());
        for entry in entries {
            let own_index = index_by_folded_username
                .get(&folded(&entry.username))
                .copied();
            let mut contact_indices = Vec::with_capacity(entry.contacts.len());
            for contact in &entry.contacts {
                let Some(&contact_index) = index_by_folded_username.get(&folded(contact)) else {
                    return Err(DemoError::UnknownContact {
                        username: entry.username.clone(),
                        contact: contact.clone(),
                    });
                };
                if Some(contact_index) == own_index || contact_indices.contains(&contact_index) {
                    return Err(DemoError::RedundantContact {
                        username: entry.username.clone(),
                        contact: contact.clone(),
                    });
                }
                contact_indices.push(contact_index);
            }
            users.push(DemoUser {
                username: entry.username,
                display_name: entry.display_name,
                password_hash: entry.password_hash,
                contact_indices,
            });
        }
        Ok(Self {
            users,
            index_by_folded_username,
            posts_newest_first: Vec::new(),
            password_cost: password_cost_opt.unwrap_or(DEFAULT_PASSWORD_COST),
        })
    }

    /// The posts of `entries`, newest first, each by a user of `self`.
    fn check_posts(&self, entries: Vec<PostEntry>) -> Result<Vec<PartnerPost>, DemoError> {
        let mut post_ids = HashSet::with_capacity(entries.len());
        let mut posts = Vec::with_capacity(entries.len());
        for entry in entries {
            if !(1..=MAX_CURSOR_BYTES).contains(&entry.post_id.len())
                || !post_ids.insert(entry.post_id.clone())
            {
                return Err(DemoError::InvalidPostId {
                    post_id: entry.post_id,
                });
            }
            let Some(author) = self.find(&entry.author) else {
                return Err(DemoError::UnknownAuthor {
                    post_id: entry.post_id,
                    author: entry.author,
                });
            };
            if entry.text.len() > MAX_POST_TEXT_BYTES {
                return Err(DemoError::PostTextTooLong {
                    post_id: entry.post_id,
                    n_bytes: entry.text.len(),
                });
            }
            posts.push(PartnerPost {
                post_id: entry.post_id,
                author: author.username.clone(),
                text: entry.text,
                published_at: entry.published_at,
            });
        }
        posts.sort_by(|left, right| {
            right
                .published_at
                .cmp(&left.published_at)
                .then_with(|| left.post_id.cmp(&right.post_id))
        });
        Ok(posts)
    }

    /// The user called `username`, compared without case.
    pub(super) fn find(&self, username: &str) -> Option<&DemoUser> {
        self.index_by_folded_username
            .get(&folded(username))
            .and_then(|&index| self.users.get(index))
    }

    /// `user`'s contacts, in file order.
    pub(super) fn contacts_of(&self, user: &DemoUser) -> Vec<PartnerContact> {
        user.contact_indices
            .iter()
            .filter_map(|&index| self.users.get(index))
            .map(|contact| PartnerContact {
                username: contact.username.clone(),
                display_name: contact.display_name.clone(),
            })
            .collect()
    }

    /// Every post, newest first (ties: by post id).
    pub(super) fn posts_newest_first(&self) -> &[PartnerPost] {
        &self.posts_newest_first
    }

    /// The argon2 cost of the first user's hash: unknown users are checked against a dummy
    /// hash of this cost, so that they take as long as a wrong password.
    pub(super) fn password_cost(&self) -> PasswordCost {
        self.password_cost
    }

    /// How many users the site has.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// How many posts were published.
    pub fn n_posts(&self) -> usize {
        self.posts_newest_first.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed cheap argon2id hash with a made-up output: loading checks only the shape.
    const CHEAP_HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$3g6hbzjW8IEzU+P7e3tBVi6P6sqNaD9ZQ7m1sCB9nKg";

    fn user(username: &str, contacts: &[&str]) -> String {
        format!(
            "[[users]]\nusername = {username:?}\ndisplay_name = \"{username} Person\"\n\
             password_hash = {CHEAP_HASH:?}\ncontacts = {contacts:?}\n"
        )
    }

    fn post(post_id: &str, author: &str, published_at: u64) -> String {
        format!(
            "[[posts]]\npost_id = {post_id:?}\nauthor = {author:?}\ntext = \"hello\"\n\
             published_at = {published_at}\n"
        )
    }

    /// Loads `text` and expects an error whose message contains `expected`.
    fn check_refused(text: &str, expected: &str) {
        let error = DemoUsers::from_toml_str(text).unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }

    #[test]
    fn a_good_file_loads_with_contacts_and_posts_in_order() {
        let text = [
            user("Alice", &["bob", "carol"]),
            user("bob", &["ALICE"]),
            user("carol", &[]),
            post("p1", "alice", 100),
            post("p3", "carol", 300),
            post("p2b", "bob", 200),
            post("p2a", "bob", 200),
        ]
        .concat();
        let users = DemoUsers::from_toml_str(&text).unwrap();
        assert_eq!((users.n_users(), users.n_posts()), (3, 4));
        let alice = users.find("aLiCe").unwrap();
        assert_eq!(alice.username, "Alice");
        let contacts: Vec<_> = users
            .contacts_of(alice)
            .into_iter()
            .map(|contact| contact.username)
            .collect();
        assert_eq!(contacts, ["bob", "carol"]);
        let bob_contacts = users.contacts_of(users.find("bob").unwrap());
        assert_eq!(bob_contacts[0].username, "Alice");
        assert_eq!(bob_contacts[0].display_name, "Alice Person");
        let order: Vec<_> = users
            .posts_newest_first()
            .iter()
            .map(|post| (post.post_id.as_str(), post.author.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("p3", "carol"),
                ("p2a", "bob"),
                ("p2b", "bob"),
                ("p1", "Alice")
            ]
        );
        assert_eq!(
            users.password_cost(),
            PasswordCost {
                memory_kib: 64,
                iterations: 1
            }
        );
    }

    #[test]
    fn an_empty_file_has_no_users() {
        let users = DemoUsers::from_toml_str("").unwrap();
        assert_eq!((users.n_users(), users.n_posts()), (0, 0));
        assert_eq!(users.password_cost(), DEFAULT_PASSWORD_COST);
    }

    #[test]
    fn duplicate_users_are_refused() {
        check_refused(
            &[user("bob", &[]), user("Bob", &[])].concat(),
            "user \"Bob\" is listed twice",
        );
    }

    #[test]
    fn unknown_and_redundant_contacts_are_refused() {
        check_refused(
            &[user("alice", &["bob", "dave"]), user("bob", &[])].concat(),
            "user \"alice\": contact \"dave\" is not a user",
        );
        check_refused(
            &[user("alice", &["bob", "BOB"]), user("bob", &[])].concat(),
            "contact \"BOB\" is the user itself or listed twice",
        );
        check_refused(
            &user("alice", &["alice"]),
            "contact \"alice\" is the user itself",
        );
    }

    #[test]
    fn bad_hashes_are_refused() {
        let with_hash = |hash: &str| {
            format!(
                "[[users]]\nusername = \"alice\"\ndisplay_name = \"A\"\npassword_hash = {hash:?}\n"
            )
        };
        check_refused(
            &with_hash("hunter2"),
            "user \"alice\": password_hash is not",
        );
        check_refused(
            &with_hash(
                "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$3g6hbzjW8IEzU+P7e3tBVi6P6sqNaD9ZQ7m1sCB9nKg",
            ),
            "not argon2id",
        );
        check_refused(
            &with_hash("$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA"),
            "no hash output",
        );
    }

    #[test]
    fn bad_names_and_sizes_are_refused() {
        check_refused(&user("a b", &[]), "user \"a b\": partner username");
        let long_name = format!(
            "[[users]]\nusername = \"alice\"\ndisplay_name = {:?}\npassword_hash = {CHEAP_HASH:?}\n",
            "é".repeat(MAX_DISPLAY_NAME_CHARS + 1)
        );
        check_refused(&long_name, "display name must be 1-64 characters, not 65");
        let long_post = format!(
            "{}[[posts]]\npost_id = \"p1\"\nauthor = \"alice\"\ntext = {:?}\npublished_at = 1\n",
            user("alice", &[]),
            "x".repeat(MAX_POST_TEXT_BYTES + 1)
        );
        check_refused(&long_post, "post \"p1\": text is 4097 bytes");
        check_refused(
            &[user("alice", &[]), post("p1", "zoe", 1)].concat(),
            "post \"p1\": author \"zoe\" is not a user",
        );
        check_refused(
            &[
                user("alice", &[]),
                post("p1", "alice", 1),
                post("p1", "alice", 2),
            ]
            .concat(),
            "post \"p1\": post ids must be unique",
        );
    }

    #[test]
    fn shape_errors_are_reported() {
        check_refused(
            "[[users]]\nusername = \"alice\"\n",
            "missing configuration field \"users[0]display_name\"",
        );
        check_refused(
            &format!("{}pasword = \"x\"\n", user("alice", &[])),
            "unknown field",
        );
        check_refused("users = [", "users file is not valid");
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = load_users(Path::new("/nonexistent/users.toml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/users.toml"),
            "{error}"
        );
    }
}
