//! The md5 password scheme (PostgreSQL docs "auth-password" and "protocol-flow",
//! AuthenticationMD5Password): the client sends
//! `"md5" || hex(md5(hex(md5(password || user)) || salt))` for a 4-byte salt from the server.
//!
//! Owns the hash and its constant-time check, for both sides. Must not do I/O or pick salts
//! (callers use [`super::random_bytes`]).

use ::md5::{Digest, Md5};

use super::ct_eq;

/// The `pg_authid.rolpassword` form of an md5 password: `"md5" || hex(md5(password || user))`.
pub fn md5_stored(user: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(password.as_bytes());
    hasher.update(user.as_bytes());
    format!("md5{}", hex(&hasher.finalize()))
}

/// What a client sends in its PasswordMessage when challenged with `salt`.
pub fn md5_hash(user: &str, password: &str, salt: [u8; 4]) -> String {
    let stored = md5_stored(user, password);
    let mut hasher = Md5::new();
    // The inner hash enters as its 32 hex characters, without the "md5" prefix.
    hasher.update(&stored.as_bytes()[3..]);
    hasher.update(salt);
    format!("md5{}", hex(&hasher.finalize()))
}

/// Whether `client_response` is the right answer to `salt` for this user and password.
/// Compares in constant time.
pub fn md5_verify(user: &str, password: &str, salt: [u8; 4], client_response: &str) -> bool {
    ct_eq(
        md5_hash(user, password, salt).as_bytes(),
        client_response.as_bytes(),
    )
}

/// Lowercase hex, as Postgres prints md5 digests.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_golden_from_md5sum() {
        // printf 'penciluser' | md5sum                                   -> 20c46e37...6aa9
        // printf '20c46e3762c864548e296b33c3406aa9\x01\x02\x03\x04' | md5sum -> 4376eb69...ca76
        assert_eq!(
            md5_stored("user", "pencil"),
            "md520c46e3762c864548e296b33c3406aa9"
        );
        assert_eq!(
            md5_hash("user", "pencil", [1, 2, 3, 4]),
            "md54376eb6913b38f9aaff38dc7cf19ca76"
        );
    }

    #[test]
    fn stored_matches_real_postgres() {
        // Postgres 15: SET password_encryption='md5'; CREATE ROLE u2 PASSWORD 'secret';
        // SELECT rolpassword FROM pg_authid WHERE rolname = 'u2';
        assert_eq!(
            md5_stored("u2", "secret"),
            "md54489eed4ef8fbc7dd325ec0f630f2af1"
        );
        // printf '4489eed4ef8fbc7dd325ec0f630f2af1\xde\xad\xbe\xef' | md5sum
        assert_eq!(
            md5_hash("u2", "secret", [0xde, 0xad, 0xbe, 0xef]),
            "md5a5bcf3d8fc668695df1314a6d4a0c7c5"
        );
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong() {
        let salt = [9, 8, 7, 6];
        let response = md5_hash("alice", "hunter2", salt);
        assert!(md5_verify("alice", "hunter2", salt, &response));
        assert!(!md5_verify("alice", "hunter3", salt, &response));
        assert!(!md5_verify("alice", "hunter2", [9, 8, 7, 5], &response));
        assert!(!md5_verify("bob", "hunter2", salt, &response));
        assert!(!md5_verify("alice", "hunter2", salt, ""));
        assert!(!md5_verify("alice", "hunter2", salt, &response[..10]));
    }
}
