//! The authentication and ACL settings every core reads: one [`Authenticator`], replaced
//! whole when SIGHUP reads the files again.
//!
//! A CONNECT reads the settings in force (a lock taken once per connection); the ACL a
//! core's broker holds is its own snapshot, refreshed when a core sees that the generation
//! moved (one atomic load per read, so a reload takes effect at each connection's next
//! packet, not only for new connections).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::auth::Authenticator;

#[derive(Default)]
pub struct AuthCell {
    current: RwLock<Arc<Authenticator>>,
    /// How many times `current` was replaced.
    generation: AtomicU64,
}

impl AuthCell {
    pub fn new(auth: Arc<Authenticator>) -> AuthCell {
        AuthCell {
            current: RwLock::new(auth),
            generation: AtomicU64::new(0),
        }
    }

    /// The settings in force.
    pub fn get(&self) -> Arc<Authenticator> {
        match self.current.read() {
            Ok(auth) => auth.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, auth: Arc<Authenticator>) {
        match self.current.write() {
            Ok(mut current) => *current = auth,
            Err(poisoned) => *poisoned.into_inner() = auth,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replacement_is_seen_with_a_new_generation() {
        let cell = AuthCell::new(Arc::new(Authenticator::default()));
        let before = cell.generation();
        assert!(!cell.get().allow_anonymous);
        cell.replace(Arc::new(Authenticator {
            allow_anonymous: true,
            ..Authenticator::default()
        }));
        assert_ne!(cell.generation(), before);
        assert!(cell.get().allow_anonymous);
    }
}
