//! Who may connect and what they may do: Mosquitto-compatible password files (`password`),
//! the decision on a CONNECT's credentials (`authenticate`) and ACL files (`acl`).
//!
//! Pure: no I/O beyond reading the files it is given, no clock, no executor. Checking a
//! password is CPU work of milliseconds for the expensive hashes; the server runs it off its
//! executors.

pub mod acl;
pub mod api_keys;
pub mod authenticate;
pub mod certificate;
pub mod password;

pub use acl::{Access, Acl, AclFileError, Who};
pub use api_keys::ApiKeys;
pub use authenticate::{Authenticator, CheckCache, PasswordCheck, Verdict};
pub use password::{Hash, PasswordFile, PasswordFileError};
