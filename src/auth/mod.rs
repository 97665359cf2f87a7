//! Authentication: SCRAM-SHA-256 and md5, both as the server (sleddog authenticating a client)
//! and as the client (sleddog authenticating to Postgres).
//!
//! Owns: the SASL message grammar (RFC 5802, RFC 7677), SCRAM verifiers in `pg_authid` form,
//! the md5 password scheme, constant-time comparison, and the one place that draws randomness
//! from the OS ([`random_bytes`]).
//!
//! Must not: touch sockets, be async, read the clock, or draw randomness inside the state
//! machines. Nonces and salts are constructor arguments so tests are deterministic; callers
//! draw them with [`random_bytes`]. Framing the SASL payloads into `AuthenticationSASL*` /
//! `SASLResponse` messages is the `protocol` module's job (PostgreSQL docs,
//! "sasl-authentication").
//!
//! Cost: the server side never runs PBKDF2 per login (it keeps StoredKey/ServerKey); the
//! client side asks its caller for the salted password so the caller can cache PBKDF2 per core
//! (see [`ScramClient::server_first`]).

pub mod md5;
pub mod scram;

use std::fmt;

pub use self::md5::{md5_hash, md5_stored, md5_verify};
pub use self::scram::{salted_password, ScramClient, ScramSecret, ScramServer};

/// Iteration count for newly derived SCRAM secrets; Postgres's default
/// (`scram_iterations`, PostgreSQL docs "runtime-config-connection").
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Largest iteration count we accept from a verifier or a server. Higher values are either
/// corrupt or would let a hostile server pin a core in PBKDF2 for minutes.
pub const ITERATIONS_MAX: u32 = 10_000_000;

/// Largest SCRAM message we parse. Real messages are under 200 bytes; the limit bounds the work
/// a client can make us do before authenticating.
pub const SCRAM_MESSAGE_LEN_MAX: usize = 4096;

/// Why an authentication exchange failed. Messages name no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The peer sent something that is not a valid message at this step.
    Malformed(&'static str),
    /// The client's proof (or md5 response) does not match any known password.
    WrongPassword,
    /// The client asked for channel binding (`p=` gs2 flag); we offer no TLS yet.
    UnsupportedChannelBinding,
    /// The server's final signature is wrong: it does not know the password (or is an impostor).
    ServerSignatureMismatch,
    /// A stored SCRAM verifier, or a set of candidate secrets, is unusable.
    BadVerifier(String),
    /// The server ended the exchange with `e=<reason>` (RFC 5802 section 7, server-error).
    ServerRejected(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed(what) => write!(f, "malformed authentication message: {what}"),
            AuthError::WrongPassword => f.write_str("password authentication failed"),
            AuthError::UnsupportedChannelBinding => f.write_str(
                "SCRAM channel binding is not supported: the connection does not use TLS",
            ),
            AuthError::ServerSignatureMismatch => {
                f.write_str("server's SCRAM signature is invalid: it does not know the password")
            }
            AuthError::BadVerifier(why) => write!(f, "invalid SCRAM secret: {why}"),
            AuthError::ServerRejected(reason) => {
                write!(f, "server rejected SCRAM authentication: {reason}")
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// `N` bytes from the OS CSPRNG, for nonces and salts.
///
/// Failure is fatal (panics via `expect`): the OS generator only fails when it is unavailable
/// or not yet seeded, and carrying on with predictable nonces would silently break SCRAM.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes)
        .expect("the OS random generator must work; predictable nonces would break SCRAM");
    bytes
}

/// Equality whose running time depends only on the lengths, not on where the inputs differ,
/// so comparing a secret leaks nothing through timing. Lengths are public here (hash sizes).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit loop.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_bytes_differ() {
        let a: [u8; 18] = random_bytes();
        let b: [u8; 18] = random_bytes();
        assert_ne!(a, b);
    }

    #[test]
    fn errors_display() {
        let text = AuthError::BadVerifier("x".into()).to_string();
        assert_eq!(text, "invalid SCRAM secret: x");
        assert!(AuthError::WrongPassword.to_string().contains("failed"));
    }
}
