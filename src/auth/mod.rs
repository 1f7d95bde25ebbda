//! Who may connect and what they may do: Mosquitto-compatible password files (`password`),
//! the decision on a CONNECT's credentials (`authenticate`), ACL files (`acl`), ban files
//! (`ban`), and the rate limits and flapping detection that keep abusers out (`rate`).
//!
//! Pure: no I/O beyond reading the files it is given, no clock, no executor. Checking a
//! password is CPU work of milliseconds for the expensive hashes; the server runs it off its
//! executors.

pub mod acl;
pub mod api_keys;
pub mod authenticate;
pub mod ban;
pub mod certificate;
pub mod password;
pub mod rate;

pub use acl::{Access, Acl, AclFileError, Who};
pub use api_keys::ApiKeys;
pub use authenticate::{Authenticator, CheckCache, PasswordCheck, Verdict};
pub use ban::{BanFileError, BanList, Banned};
pub use password::{Hash, PasswordFile, PasswordFileError};
pub use rate::{Flapping, FlappingPolicy, TokenBucket};
