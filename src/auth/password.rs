//! Password files in Mosquitto's format: one `username:hash` per line, read as Mosquitto
//! 2.0 and 2.1 write them, and written by `berth passwd`.
//!
//! Hashes read:
//! - `$6$<salt>$<hash>`: SHA-512 of the password followed by the salt (Mosquitto 1.x).
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 with a 64-byte output (2.0 writes
//!   a 12-byte salt and 101 iterations, 2.1 a 64-byte salt and 210,000).
//! - `$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`: a PHC string (2.1's default).
//!
//! Salts and hashes of `$6$` and `$7$` are standard base64 with padding. Blank lines and
//! lines starting with `#` are skipped. A line that is not one of the above is an error
//! that names the file and the line: a file that half loads would lock users out
//! silently.
//!
//! Invariants: a comparison of hashes takes the same time whatever the bytes (`subtle`);
//! a user who is not in the file fails the same check as a wrong password (a dummy hash of
//! the same cost is not computed: the time of a miss says only that the name is unknown,
//! as Mosquitto's does). Checking is CPU work of milliseconds for `$7$` at 2.1's iterations
//! and for argon2id: callers run it off the executors.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// PBKDF2 parameters Mosquitto 2.1 writes (`berth passwd --hash pbkdf2`).
pub const PBKDF2_ITERATIONS: u32 = 210_000;
pub const PBKDF2_SALT_LEN: usize = 64;
const PBKDF2_HASH_LEN: usize = 64;

/// argon2id parameters Mosquitto 2.1 writes: t=1, m=47104 KiB, p=1.
const ARGON2_MEMORY_KIB: u32 = 47_104;
const ARGON2_TIME: u32 = 1;
const ARGON2_LANES: u32 = 1;

/// One user's stored hash.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Pbkdf2 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// The PHC string, checked to parse when read.
    Argon2id(String),
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the hash itself: it would let a log reader attack it offline.
        match self {
            Hash::Sha512 { .. } => f.write_str("Hash::Sha512"),
            Hash::Pbkdf2 { iterations, .. } => write!(f, "Hash::Pbkdf2({iterations})"),
            Hash::Argon2id(_) => f.write_str("Hash::Argon2id"),
        }
    }
}

impl Hash {
    /// Reads the part of a line after `username:`.
    pub fn parse(text: &str) -> Result<Hash, &'static str> {
        if text.starts_with("$argon2id$") {
            let phc =
                PasswordHash::new(text).map_err(|_| "an $argon2id$ hash that does not parse")?;
            if phc.hash.is_none() {
                return Err("an $argon2id$ string without its hash");
            }
            argon2::Params::try_from(&phc)
                .map_err(|_| "$argon2id$ parameters that do not parse")?;
            return Ok(Hash::Argon2id(text.to_string()));
        }
        let b64 = |s: &str| STANDARD.decode(s).map_err(|_| "salt or hash is not base64");
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "6", salt, hash] => {
                let (salt, hash) = (b64(salt)?, b64(hash)?);
                if hash.len() != 64 {
                    return Err("a $6$ hash that is not 64 bytes");
                }
                Ok(Hash::Sha512 { salt, hash })
            }
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("a $7$ iteration count that is not a positive number")?;
                let (salt, hash) = (b64(salt)?, b64(hash)?);
                if hash.len() != PBKDF2_HASH_LEN {
                    return Err("a $7$ hash that is not 64 bytes");
                }
                if salt.is_empty() {
                    return Err("a $7$ hash with an empty salt");
                }
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            _ => Err("not a $6$, $7$ or $argon2id$ hash"),
        }
    }

    /// Whether `password` matches, in time that does not depend on where the bytes differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                bool::from(digest.finalize().as_slice().ct_eq(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; PBKDF2_HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                bool::from(out.as_slice().ct_eq(hash))
            }
            Hash::Argon2id(phc) => match PasswordHash::new(phc) {
                // argon2's verify compares in constant time.
                Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }

    /// A new argon2id hash of `password` with Mosquitto 2.1's parameters.
    pub fn argon2id(password: &[u8]) -> Hash {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_TIME, ARGON2_LANES, None)
            .expect("constant argon2 parameters are valid");
        let hasher = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let phc = hasher
            .hash_password(password, &salt)
            .expect("argon2id hashes any password with a generated salt");
        Hash::Argon2id(phc.to_string())
    }

    /// A new PBKDF2-HMAC-SHA512 hash of `password` (`$7$`), readable by Mosquitto 2.0 only
    /// with `salt_len` 12 (2.1 reads 12 or 64).
    pub fn pbkdf2(password: &[u8], iterations: u32, salt_len: usize) -> Hash {
        let mut salt = vec![0u8; salt_len];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let mut hash = vec![0u8; PBKDF2_HASH_LEN];
        pbkdf2::pbkdf2_hmac::<Sha512>(password, &salt, iterations, &mut hash);
        Hash::Pbkdf2 {
            iterations,
            salt,
            hash,
        }
    }
}

impl fmt::Display for Hash {
    /// The hash as a password file holds it after `username:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            Hash::Argon2id(phc) => f.write_str(phc),
        }
    }
}

/// A password file that did not load: which file, which line, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    #[error("password_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("password_file {} line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Every user of a password file, in the order of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    users: Vec<(String, Hash)>,
}

impl PasswordFile {
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        PasswordFile::parse(&text, path)
    }

    /// Reads the text of a password file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let mut users: Vec<(String, Hash)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: String| PasswordFileError::Line {
                path: path.to_path_buf(),
                line,
                problem,
            };
            let entry = raw.trim_end_matches('\r');
            if entry.trim().is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = entry.split_once(':') else {
                return Err(err("expected username:hash".into()));
            };
            if user.is_empty() {
                return Err(err("empty username".into()));
            }
            let hash =
                Hash::parse(hash).map_err(|problem| err(format!("user {user}: {problem}")))?;
            if let Some(first) = seen.insert(user.to_string(), line) {
                return Err(err(format!("user {user} is also on line {first}")));
            }
            users.push((user.to_string(), hash));
        }
        Ok(PasswordFile { users })
    }

    pub fn get(&self, username: &str) -> Option<&Hash> {
        self.users
            .iter()
            .find(|(u, _)| u == username)
            .map(|(_, h)| h)
    }

    /// Whether `username` is in the file with this `password`.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        self.get(username).is_some_and(|hash| hash.verify(password))
    }

    /// Sets (adds or replaces) a user's hash, keeping the order of the file.
    pub fn set(&mut self, username: &str, hash: Hash) {
        match self.users.iter_mut().find(|(u, _)| u == username) {
            Some((_, h)) => *h = hash,
            None => self.users.push((username.to_string(), hash)),
        }
    }

    /// Removes a user; false if there was none.
    pub fn remove(&mut self, username: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|(u, _)| u != username);
        self.users.len() != before
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl fmt::Display for PasswordFile {
    /// The file's text, one `username:hash` line per user.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (user, hash) in &self.users {
            writeln!(f, "{user}:{hash}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
