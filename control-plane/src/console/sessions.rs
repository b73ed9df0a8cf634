//! Console sessions, held in this process's memory: a sign-in exchanges an admin token for a
//! random session id (the cookie) and a CSRF token (in every form). The token stays here, in
//! a zeroizing wrapper, to authenticate each admin call the session makes; it never goes back
//! to the browser. A session ends on sign-out, after `idle` without a request, after
//! `lifetime` whatever happens, or when its token stops authenticating.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sluice_shared::secret::SecretString;

/// The most sessions held at once: a flood of sign-ins evicts the oldest, never grows memory.
const MAX_SESSIONS: usize = 10_000;

/// Who signed in, as the admin service told the console.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    /// May change things (admin or org-admin); read-only callers see no write controls.
    pub can_write: bool,
    /// Global tokens: `None` (any organisation, and the fleet).
    pub organization: Option<String>,
    pub scope_label: &'static str,
}

/// A message for the next page the session sees (after a redirect).
#[derive(Debug)]
pub enum Flash {
    Done(String),
    Failed(super::errors::ShownError),
    /// A secret shown once (a new virtual key), with what it is.
    Secret {
        what: String,
        value: SecretString,
    },
    /// A key test's outcome.
    KeyTest(super::errors::KeyTestShown),
}

pub struct Session {
    /// Shared with each request of the session: the secret is never copied.
    pub token: Arc<SecretString>,
    pub caller: Caller,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
    flash: Option<Flash>,
}

#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub idle: Duration,
    pub lifetime: Duration,
}

pub struct Sessions {
    expiry: Expiry,
    by_id: Mutex<HashMap<String, Session>>,
}

/// What a request learns of its session.
#[derive(Clone)]
pub struct Current {
    pub id: Arc<str>,
    pub token: Arc<SecretString>,
    pub caller: Caller,
    pub csrf: String,
}

impl Sessions {
    pub fn new(expiry: Expiry) -> Self {
        Self {
            expiry,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session; returns its id (the cookie's value).
    pub fn open(&self, token: SecretString, caller: Caller) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut held = self.held();
        held.retain(|_, session| self.live(session, now));
        if held.len() >= MAX_SESSIONS
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, session)| session.created)
                .map(|(id, _)| id.clone())
        {
            held.remove(&oldest);
        }
        held.insert(
            id.clone(),
            Session {
                token: Arc::new(token),
                caller,
                csrf: random_token(),
                created: now,
                last_seen: now,
                flash: None,
            },
        );
        id
    }

    /// The live session with this id, its idle clock restarted; an expired one is dropped.
    pub fn find(&self, id: &str) -> Option<Current> {
        let now = Instant::now();
        let mut held = self.held();
        let session = held.get_mut(id)?;
        if !self.live(session, now) {
            held.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(Current {
            id: Arc::from(id),
            token: Arc::clone(&session.token),
            caller: session.caller.clone(),
            csrf: session.csrf.clone(),
        })
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.expiry.idle
            && now.duration_since(session.created) < self.expiry.lifetime
    }

    pub fn close(&self, id: &str) {
        self.held().remove(id);
    }

    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.held().get_mut(id) {
            session.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.held()
            .get_mut(id)
            .and_then(|session| session.flash.take())
    }

    pub fn expiry(&self) -> Expiry {
        self.expiry
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares a submitted CSRF token with the session's without an early exit.
pub fn same_token(submitted: &str, expected: &str) -> bool {
    submitted.len() == expected.len()
        && submitted
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            name: "ops".into(),
            can_write: true,
            organization: None,
            scope_label: "admin",
        }
    }

    #[test]
    fn sessions_end_when_idle_and_after_their_lifetime() {
        let idle = Sessions::new(Expiry {
            idle: Duration::from_millis(30),
            lifetime: Duration::from_secs(60),
        });
        let id = idle.open(SecretString::new("t".into()), caller());
        assert!(idle.find(&id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(idle.find(&id).is_none(), "idle session still open");

        let short = Sessions::new(Expiry {
            idle: Duration::from_secs(60),
            lifetime: Duration::from_millis(30),
        });
        let id = short.open(SecretString::new("t".into()), caller());
        std::thread::sleep(Duration::from_millis(40));
        assert!(short.find(&id).is_none(), "session outlived its lifetime");
    }

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
        assert!(!same_token("", "abc"));
    }
}
