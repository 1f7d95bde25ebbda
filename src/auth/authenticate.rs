//! Who may connect: the decision on a CONNECT's username and password, as Mosquitto 2.0
//! makes it.
//!
//! - No username: allowed only with `allow_anonymous` (else Not authorized: v5 0x87,
//!   3.1.1 return code 5).
//! - A username, with a password file: allowed when the file holds the user and the
//!   password matches its hash (else Bad User Name or Password: v5 0x86, 3.1.1 code 4;
//!   a username without a password fails the same way).
//! - A username, without a password file: allowed (nothing to check it against).
//!
//! The decision is split in two so that the expensive part can run off the executor:
//! [`Authenticator::precheck`] decides everything that needs no hash, and names the check
//! ([`PasswordCheck`]) left to run where CPU time may be spent.

use std::sync::Arc;

use super::{Acl, PasswordFile};

/// The authentication settings in force: immutable, replaced whole on a reload.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    pub passwords: Option<Arc<PasswordFile>>,
    pub allow_anonymous: bool,
    /// What each client may publish and read; `None`: everything.
    pub acl: Option<Arc<Acl>>,
    /// See [`Authenticator::may_take_session`].
    pub session_ownership: bool,
}

/// The outcome of a CONNECT's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Bad user name or password (v5 0x86, 3.1.1 return code 4).
    BadCredentials,
    /// No username where one is required (v5 0x87, 3.1.1 return code 5).
    NotAuthorized,
}

/// What is left to decide: a password to check against a user's hash.
#[derive(Debug, Clone)]
pub struct PasswordCheck {
    pub passwords: Arc<PasswordFile>,
    pub username: String,
    pub password: Vec<u8>,
}

impl PasswordCheck {
    /// Runs the hash: milliseconds for `$7$` and argon2id, so not on an executor.
    pub fn run(&self) -> Verdict {
        if self.passwords.verify(&self.username, &self.password) {
            Verdict::Allowed
        } else {
            Verdict::BadCredentials
        }
    }
}

/// Passwords that checked lately, so that a client reconnecting with the same credentials
/// costs one hash, not one per CONNECT: argon2id with Mosquitto 2.1's parameters costs tens
/// of milliseconds and 46 MiB, which a storm of reconnects would queue behind. An entry is a
/// username and a keyed SHA-256 of the password (the key is random per process, so the cache
/// holds no hash that another process could match). It holds entries for one password file
/// only: a reloaded file empties it, so a changed or removed password is checked afresh.
/// Bounded: when full it is emptied.
#[derive(Default)]
pub struct CheckCache {
    file: Option<Arc<PasswordFile>>,
    key: [u8; 32],
    allowed: std::collections::HashSet<(String, [u8; 32])>,
}

/// Entries a [`CheckCache`] holds before it starts over.
pub const CHECK_CACHE_ENTRIES: usize = 65_536;

impl CheckCache {
    pub fn new() -> CheckCache {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        CheckCache {
            file: None,
            key,
            allowed: Default::default(),
        }
    }

    fn entry(&self, check: &PasswordCheck) -> (String, [u8; 32]) {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        digest.update(self.key);
        digest.update(&check.password);
        (check.username.clone(), digest.finalize().into())
    }

    fn same_file(&mut self, check: &PasswordCheck) {
        if !self
            .file
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(f, &check.passwords))
        {
            self.allowed.clear();
            self.file = Some(check.passwords.clone());
        }
    }

    /// Whether `check` passed lately against the same password file.
    pub fn passed(&mut self, check: &PasswordCheck) -> bool {
        self.same_file(check);
        let entry = self.entry(check);
        self.allowed.contains(&entry)
    }

    /// Remembers that `check` passed.
    pub fn remember(&mut self, check: &PasswordCheck) {
        self.same_file(check);
        if self.allowed.len() >= CHECK_CACHE_ENTRIES {
            self.allowed.clear();
        }
        let entry = self.entry(check);
        self.allowed.insert(entry);
    }
}

impl Authenticator {
    /// Decides what needs no hash; `Err` carries the password check still to run.
    pub fn precheck(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Verdict, PasswordCheck> {
        let Some(username) = username else {
            return Ok(if self.allow_anonymous {
                Verdict::Allowed
            } else {
                Verdict::NotAuthorized
            });
        };
        let Some(passwords) = &self.passwords else {
            return Ok(Verdict::Allowed);
        };
        let (Some(password), true) = (password, passwords.get(username).is_some()) else {
            return Ok(Verdict::BadCredentials);
        };
        Err(PasswordCheck {
            passwords: passwords.clone(),
            username: username.to_string(),
            password: password.to_vec(),
        })
    }

    /// Whether a connection of `username` may take over (or clean) a session that a
    /// connection of `owner` took last. With `session_ownership` and checked usernames (a
    /// password file, or `certified`: the connection's username is its client certificate's
    /// name) only the same username may, an anonymous connection as much as any other;
    /// otherwise anyone may, as in Mosquitto.
    pub fn may_take_session(
        &self,
        owner: Option<&str>,
        username: Option<&str>,
        certified: bool,
    ) -> bool {
        let checked = self.passwords.is_some() || certified;
        !self.session_ownership || !checked || owner == username
    }

    /// The whole decision, hash included (tests, and callers that may block).
    pub fn check(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        self.precheck(username, password)
            .unwrap_or_else(|check| check.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Hash;

    fn with_file(allow_anonymous: bool) -> Authenticator {
        let mut file = PasswordFile::default();
        file.set("dev", Hash::pbkdf2(b"right", 101, 12));
        Authenticator {
            passwords: Some(Arc::new(file)),
            allow_anonymous,
            acl: None,
            session_ownership: true,
        }
    }

    #[test]
    fn with_a_password_file_a_session_is_taken_by_its_own_user_only() {
        let auth = with_file(true);
        assert!(auth.may_take_session(Some("dev"), Some("dev"), false));
        assert!(auth.may_take_session(None, None, false));
        assert!(!auth.may_take_session(Some("dev"), Some("other"), false));
        assert!(
            !auth.may_take_session(Some("dev"), None, false),
            "anonymous"
        );
        assert!(!auth.may_take_session(None, Some("dev"), false));
        let off = Authenticator {
            session_ownership: false,
            ..with_file(true)
        };
        assert!(off.may_take_session(Some("dev"), Some("other"), false));
        let unchecked = Authenticator {
            passwords: None,
            ..with_file(true)
        };
        assert!(
            unchecked.may_take_session(Some("dev"), Some("other"), false),
            "without a password file usernames prove nothing"
        );
        assert!(
            !unchecked.may_take_session(Some("dev"), Some("other"), true),
            "a certificate's name does"
        );
    }

    #[test]
    fn a_password_file_admits_its_users_with_their_passwords_only() {
        let auth = with_file(false);
        assert_eq!(auth.check(Some("dev"), Some(b"right")), Verdict::Allowed);
        assert_eq!(
            auth.check(Some("dev"), Some(b"wrong")),
            Verdict::BadCredentials
        );
        assert_eq!(auth.check(Some("dev"), None), Verdict::BadCredentials);
        assert_eq!(
            auth.check(Some("other"), Some(b"right")),
            Verdict::BadCredentials
        );
        assert_eq!(auth.check(None, None), Verdict::NotAuthorized);
        assert_eq!(auth.check(None, Some(b"right")), Verdict::NotAuthorized);
    }

    #[test]
    fn only_a_known_user_with_a_password_costs_a_hash() {
        let auth = with_file(true);
        assert!(auth.precheck(Some("dev"), Some(b"x")).is_err(), "to hash");
        assert_eq!(
            auth.precheck(Some("nobody"), Some(b"x")).ok(),
            Some(Verdict::BadCredentials)
        );
        assert_eq!(
            auth.precheck(None, None).ok(),
            Some(Verdict::Allowed),
            "anonymous allowed"
        );
    }

    #[test]
    fn the_cache_remembers_passes_for_one_file_only() {
        let auth = with_file(false);
        let mut cache = CheckCache::new();
        let right = auth.precheck(Some("dev"), Some(b"right")).unwrap_err();
        let wrong = auth.precheck(Some("dev"), Some(b"wrong")).unwrap_err();
        assert!(!cache.passed(&right));
        cache.remember(&right);
        assert!(cache.passed(&right));
        assert!(!cache.passed(&wrong), "another password is checked afresh");
        let reloaded = with_file(false);
        let again = reloaded.precheck(Some("dev"), Some(b"right")).unwrap_err();
        assert!(!cache.passed(&again), "a reloaded file empties the cache");
    }

    #[test]
    fn without_a_password_file_usernames_are_not_checked() {
        let auth = Authenticator {
            passwords: None,
            allow_anonymous: true,
            ..Authenticator::default()
        };
        assert_eq!(auth.check(Some("any"), Some(b"thing")), Verdict::Allowed);
        assert_eq!(auth.check(None, None), Verdict::Allowed);
        let closed = Authenticator::default();
        assert_eq!(closed.check(None, None), Verdict::NotAuthorized);
    }
}
