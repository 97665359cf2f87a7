//! Client authentication at login, per `auth_type`, driving the sans-IO steps in
//! `crate::auth` over the client's socket.
//!
//! An unknown user goes through the same exchange as a known one with a wrong
//! password and gets the same FATAL 28P01, so the reply does not tell which.
//!
//! `auth_type = "plain"` with only a `password_hash` must run PBKDF2 on the
//! core to check what the client sent; `PlainAuthCache` (one per core) keeps
//! that to once per (user, password, verifier).

use std::cell::RefCell;
use std::collections::HashSet;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::auth::{self, ScramSecret, ScramServer};
use crate::config::AuthType;
use crate::control::snapshot::{Login, Snapshot};
use crate::protocol::frontend::{decode_password, decode_sasl_initial, FrontendMessage};
use crate::protocol::{frame, write, DEFAULT_MAX_MESSAGE_LEN};
use crate::session::client::Client;

const SCRAM: &str = "SCRAM-SHA-256";

/// Authenticates `user`; on success AuthenticationOk is queued in `client.out`.
/// On failure the client has been sent a FATAL error.
pub async fn authenticate(
    client: &mut Client,
    snapshot: &Snapshot,
    plain_cache: &PlainAuthCache,
    user: &str,
) -> bool {
    let login = snapshot.logins.get(user);
    let verdict = match snapshot.auth_type {
        AuthType::Trust => Ok(login.is_some()),
        AuthType::Scram => scram(client, login).await,
        AuthType::Md5 => md5(client, user, login).await,
        AuthType::Plain => plain(client, login, plain_cache).await,
    };
    match verdict {
        Ok(true) => {
            write::authentication_ok(&mut client.out);
            true
        }
        Ok(false) => {
            let message = format!("password authentication failed for user \"{user}\"");
            client.fatal("28P01", &message).await;
            false
        }
        Err(Failure::Protocol(message)) => {
            client.fatal("08P01", message).await;
            false
        }
        Err(Failure::Gone) => false,
    }
}

enum Failure {
    /// The client broke the protocol.
    Protocol(&'static str),
    /// The client went away.
    Gone,
}

/// Flushes `client.out` and reads the body of the client's next password-type message.
async fn exchange(client: &mut Client) -> Result<Bytes, Failure> {
    client.flush().await.map_err(|_| Failure::Gone)?;
    loop {
        match frame::split(&mut client.buf, DEFAULT_MAX_MESSAGE_LEN) {
            Ok(Some(message)) => {
                return match FrontendMessage::decode(&message) {
                    Ok(FrontendMessage::Password(body)) => Ok(message.slice_ref(body)),
                    Ok(FrontendMessage::Terminate) => Err(Failure::Gone),
                    _ => Err(Failure::Protocol("expected a password message")),
                };
            }
            Ok(None) => {}
            Err(_) => return Err(Failure::Protocol("malformed message during authentication")),
        }
        match client.read_more().await {
            Ok(0) | Err(_) => return Err(Failure::Gone),
            Ok(_) => {}
        }
    }
}

async fn scram(client: &mut Client, login: Option<&Login>) -> Result<bool, Failure> {
    let candidates = match login {
        Some(login) if !login.scram.is_empty() => login.scram.clone(),
        // Unknown user, or no password configured: a secret nobody knows.
        _ => vec![unguessable_secret()],
    };
    let Ok(mut server) = ScramServer::new(candidates, auth::random_bytes()) else {
        return Ok(false);
    };
    write::authentication_sasl(&mut client.out, &[SCRAM]);
    let body = exchange(client).await?;
    let (mechanism, data) = decode_sasl_initial(&body)
        .map_err(|_| Failure::Protocol("malformed SASLInitialResponse"))?;
    if mechanism != SCRAM {
        return Err(Failure::Protocol("unsupported SASL mechanism"));
    }
    let server_first = server
        .client_first(data.unwrap_or_default())
        .map_err(|_| Failure::Protocol("malformed SCRAM client-first-message"))?;
    write::authentication_sasl_continue(&mut client.out, &server_first);
    let body = exchange(client).await?;
    match server.client_final(&body) {
        Ok(server_final) => {
            write::authentication_sasl_final(&mut client.out, &server_final);
            Ok(login.is_some())
        }
        Err(auth::AuthError::WrongPassword) => Ok(false),
        Err(_) => Err(Failure::Protocol("malformed SCRAM client-final-message")),
    }
}

async fn md5(client: &mut Client, user: &str, login: Option<&Login>) -> Result<bool, Failure> {
    let salt: [u8; 4] = auth::random_bytes();
    write::authentication_md5(&mut client.out, salt);
    let body = exchange(client).await?;
    let response = decode_password(&body).map_err(|_| Failure::Protocol("malformed password"))?;
    let Some(login) = login else {
        return Ok(false);
    };
    // Any configured password matches; evaluate all so timing does not tell which.
    let matched = login.passwords.iter().fold(false, |ok, p| {
        auth::md5_verify(user, p, salt, response) | ok
    });
    Ok(matched)
}

async fn plain(
    client: &mut Client,
    login: Option<&Login>,
    cache: &PlainAuthCache,
) -> Result<bool, Failure> {
    write::authentication_cleartext(&mut client.out);
    let body = exchange(client).await?;
    let password = decode_password(&body).map_err(|_| Failure::Protocol("malformed password"))?;
    let Some(login) = login else {
        return Ok(false);
    };
    let by_text = login.passwords.iter().fold(false, |ok, p| {
        auth::ct_eq(p.as_bytes(), password.as_bytes()) | ok
    });
    if by_text || !login.passwords.is_empty() {
        return Ok(by_text);
    }
    // Only a SCRAM verifier is configured: derive the keys from what was sent
    // (PBKDF2 on the core, once per password thanks to the cache).
    Ok(cache.verify(&login.name, password, &login.scram))
}

/// Cleartext passwords already proven against a SCRAM verifier, per core.
///
/// Holds SHA-256 digests of (user, verifier, password), never the password:
/// a hit needs the right password again. Only successes are stored, so a
/// wrong password always pays PBKDF2 and is always refused. A reload that
/// changes the verifier changes the digest, so old entries just stop matching.
#[derive(Default)]
pub struct PlainAuthCache {
    verified: RefCell<HashSet<[u8; 32]>>,
}

impl PlainAuthCache {
    /// Bounded: a cache this full means many users or churn; start over.
    const LIMIT: usize = 1024;

    /// True when `password` matches one of `secrets`.
    pub fn verify(&self, user: &str, password: &str, secrets: &[ScramSecret]) -> bool {
        self.verify_with(user, password, secrets, ScramSecret::from_password)
    }

    /// `verify` with the PBKDF2 step injected, so tests can count it.
    fn verify_with(
        &self,
        user: &str,
        password: &str,
        secrets: &[ScramSecret],
        derive: impl Fn(&str, &[u8], u32) -> ScramSecret,
    ) -> bool {
        for secret in secrets {
            let digest = cache_key(user, password, secret);
            if self.verified.borrow().contains(&digest) {
                return true;
            }
            let derived = derive(password, &secret.salt, secret.iterations);
            if auth::ct_eq(&derived.stored_key, &secret.stored_key) {
                let mut verified = self.verified.borrow_mut();
                if verified.len() >= Self::LIMIT {
                    verified.clear();
                }
                verified.insert(digest);
                return true;
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.verified.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SHA-256 over length-prefixed fields, so no two inputs share an encoding.
fn cache_key(user: &str, password: &str, secret: &ScramSecret) -> [u8; 32] {
    let mut hash = Sha256::new();
    for field in [
        user.as_bytes(),
        &secret.salt,
        &secret.iterations.to_be_bytes(),
        &secret.stored_key,
        password.as_bytes(),
    ] {
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field);
    }
    hash.finalize().into()
}

fn unguessable_secret() -> ScramSecret {
    ScramSecret {
        iterations: auth::DEFAULT_ITERATIONS,
        salt: auth::random_bytes::<16>().to_vec(),
        stored_key: auth::random_bytes(),
        server_key: auth::random_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Few iterations: these tests count PBKDF2 runs, they do not time them.
    fn secret(password: &str) -> ScramSecret {
        ScramSecret::from_password(password, b"0123456789abcdef", 16)
    }

    fn counting(runs: &Cell<usize>) -> impl Fn(&str, &[u8], u32) -> ScramSecret + '_ {
        move |password, salt, iterations| {
            runs.set(runs.get() + 1);
            ScramSecret::from_password(password, salt, iterations)
        }
    }

    #[test]
    fn second_login_with_the_same_password_skips_pbkdf2() {
        let cache = PlainAuthCache::default();
        let secrets = [secret("hunter2")];
        let runs = Cell::new(0);
        assert!(cache.verify_with("alice", "hunter2", &secrets, counting(&runs)));
        assert_eq!(runs.get(), 1);
        assert!(cache.verify_with("alice", "hunter2", &secrets, counting(&runs)));
        assert_eq!(runs.get(), 1, "served from the cache");
        assert!(cache.verify("alice", "hunter2", &secrets));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn wrong_password_is_refused_every_time_and_never_cached() {
        let cache = PlainAuthCache::default();
        let secrets = [secret("hunter2")];
        let runs = Cell::new(0);
        for _ in 0..3 {
            assert!(!cache.verify_with("alice", "hunter3", &secrets, counting(&runs)));
        }
        assert_eq!(runs.get(), 3);
        assert!(cache.is_empty());
        // A cached success does not let a different password in.
        assert!(cache.verify_with("alice", "hunter2", &secrets, counting(&runs)));
        assert!(!cache.verify_with("alice", "hunter3", &secrets, counting(&runs)));
        assert!(!cache.verify_with("alice", "", &secrets, counting(&runs)));
    }

    #[test]
    fn entries_are_per_user_and_per_verifier() {
        let cache = PlainAuthCache::default();
        let runs = Cell::new(0);
        assert!(cache.verify_with("alice", "pw", &[secret("pw")], counting(&runs)));
        // Another user with the same password and verifier pays once too.
        assert!(cache.verify_with("bob", "pw", &[secret("pw")], counting(&runs)));
        assert_eq!(runs.get(), 2);
        // A reload that changes the verifier: the old entry no longer proves it.
        let changed = [ScramSecret::from_password("other", b"fedcba9876543210", 16)];
        assert!(!cache.verify_with("alice", "pw", &changed, counting(&runs)));
        assert_eq!(runs.get(), 3);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = PlainAuthCache::default();
        let secrets = [secret("pw")];
        let fake_match = |_: &str, _: &[u8], _: u32| secret("pw");
        for index in 0..PlainAuthCache::LIMIT + 10 {
            assert!(cache.verify_with(&format!("u{index}"), "pw", &secrets, fake_match));
            assert!(cache.len() <= PlainAuthCache::LIMIT);
        }
        assert_eq!(cache.len(), 10, "cleared on overflow, then refilled");
    }
}
