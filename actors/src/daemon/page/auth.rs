//! Who may use the operator's page: the password (or its Argon2 hash), sessions held in
//! HttpOnly, SameSite=Strict cookies, a CSRF token per session for every action, and a limit
//! on login attempts per address.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The page's password, as the configuration gives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Login {
    Password(String),
    /// A PHC string (`$argon2id$v=19$...`), from `filemetasync hash-password`.
    Hash(String),
}

impl Login {
    /// Does `given` open the page? Compares digests (the same length whatever was typed), or
    /// verifies against the hash.
    pub fn accepts(&self, given: &str) -> bool {
        match self {
            Login::Password(password) => {
                let (a, b) = (Sha256::digest(password.as_bytes()), Sha256::digest(given.as_bytes()));
                a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
            }
            Login::Hash(hash) => match PasswordHash::new(hash) {
                Ok(parsed) => Argon2::default().verify_password(given.as_bytes(), &parsed).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// Is `hash` a password hash this build can check? The message says what to do if not.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    match PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str().starts_with("argon2") => Ok(()),
        Ok(parsed) => Err(format!(
            "is a {} hash; make an Argon2 one with `filemetasync hash-password`",
            parsed.algorithm
        )),
        Err(_) => Err("is not a password hash: make one with `filemetasync hash-password`".into()),
    }
}

/// An Argon2id hash of `password` (PHC string) with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|error| error.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| error.to_string())
}

/// A random token, hex.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The cookie that carries the session.
pub const SESSION_COOKIE: &str = "fms_session";

/// At most this many sessions at once; a new login ends the one idle the longest.
const MAX_SESSIONS: usize = 64;

struct Session {
    csrf: String,
    last_seen: Instant,
}

pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session: its token (for the cookie) and its CSRF token (for the forms).
    pub fn open(&self) -> (String, String) {
        let mut map = self.map();
        let idle = self.idle;
        map.retain(|_, session| session.last_seen.elapsed() < idle);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, session)| session.last_seen)
                .map(|(token, _)| token.clone())
            {
                map.remove(&oldest);
            }
        }
        let (session, csrf) = (token(), token());
        map.insert(
            session.clone(),
            Session {
                csrf: csrf.clone(),
                last_seen: Instant::now(),
            },
        );
        (session, csrf)
    }

    /// The CSRF token of a live session (and the session is seen now), or None.
    pub fn check(&self, session: &str) -> Option<String> {
        let mut map = self.map();
        let live = map.get_mut(session)?;
        if live.last_seen.elapsed() >= self.idle {
            map.remove(session);
            return None;
        }
        live.last_seen = Instant::now();
        Some(live.csrf.clone())
    }

    pub fn close(&self, session: &str) {
        self.map().remove(session);
    }
}

/// Login attempts: a few per minute from one address, and a ceiling for all addresses
/// together (an attacker with many addresses still gets no more).
pub struct Attempts {
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    overall: governor::DefaultDirectRateLimiter,
}

/// Attempts per minute from one address (and the burst allowed at once).
pub const ATTEMPTS_PER_MINUTE: u32 = 5;
const OVERALL_PER_MINUTE: u32 = 30;

impl Default for Attempts {
    fn default() -> Attempts {
        let per = |n: u32| Quota::per_minute(NonZeroU32::new(n).expect("a positive quota"));
        Attempts {
            per_address: RateLimiter::keyed(per(ATTEMPTS_PER_MINUTE)),
            overall: RateLimiter::direct(per(OVERALL_PER_MINUTE)),
        }
    }
}

impl Attempts {
    /// May `address` try a password now?
    pub fn allow(&self, address: IpAddr) -> bool {
        self.per_address.retain_recent();
        self.per_address.check_key(&address).is_ok() && self.overall.check().is_ok()
    }
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// Equal tokens, compared without an early exit.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_and_its_hash_open_the_page_and_nothing_else_does() {
        let plain = Login::Password("correct horse".into());
        assert!(plain.accepts("correct horse"));
        assert!(!plain.accepts("correct hors"));
        assert!(!plain.accepts(""));
        let hash = hash_password("correct horse").unwrap();
        assert!(check_password_hash(&hash).is_ok(), "{hash}");
        let hashed = Login::Hash(hash);
        assert!(hashed.accepts("correct horse"));
        assert!(!hashed.accepts("Correct horse"));
        assert!(check_password_hash("correct horse").is_err());
        assert!(!Login::Hash("not a hash".into()).accepts("not a hash"));
    }

    #[test]
    fn sessions_end_when_closed_or_idle() {
        let sessions = Sessions::new(Duration::from_millis(200));
        let (session, csrf) = sessions.open();
        assert_eq!(sessions.check(&session).as_deref(), Some(csrf.as_str()));
        assert_eq!(sessions.check("forged"), None);
        sessions.close(&session);
        assert_eq!(sessions.check(&session), None);
        let (idle, _) = sessions.open();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(sessions.check(&idle), None);
    }

    #[test]
    fn login_attempts_are_limited_per_address() {
        let attempts = Attempts::default();
        let (one, two): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let allowed = (0..20).filter(|_| attempts.allow(one)).count();
        assert_eq!(allowed, ATTEMPTS_PER_MINUTE as usize);
        assert!(attempts.allow(two), "another address still may");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let header = "a=1; fms_session=abc; b=2";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(header, "c"), None);
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }
}
