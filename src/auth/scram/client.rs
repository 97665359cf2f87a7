//! The client side of SCRAM-SHA-256: sleddog logging in to Postgres.
//!
//! Sans-IO: the server conn sends [`ScramClient::client_first`] in SASLInitialResponse, feeds
//! AuthenticationSASLContinue data to [`ScramClient::server_first`] and sends the result in
//! SASLResponse, then feeds AuthenticationSASLFinal data to [`ScramClient::server_final`]
//! (PostgreSQL docs "sasl-authentication"). Must not do I/O, draw randomness or run PBKDF2
//! behind the caller's back (the caller supplies SaltedPassword so it can cache it).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::super::{ct_eq, AuthError};
use super::message::{parse_server_final, parse_server_first, text, ServerFinal};
use super::{auth_message, hmac, salted_password, xor_in_place, Keys, NONCE_LEN};

/// gs2 header "n,,": we do not support channel binding. Its base64 is the `c=` value.
const GS2_HEADER: &str = "n,,";
const GS2_HEADER_B64: &str = "biws";

/// One login to a Postgres server.
pub struct ScramClient {
    password: String,
    client_first_bare: String,
    client_nonce: String,
    state: State,
}

enum State {
    Initial,
    AwaitServerFinal { server_signature: [u8; 32] },
    Done,
}

impl ScramClient {
    /// `client_nonce` must come from a CSPRNG ([`crate::auth::random_bytes`]).
    pub fn new(password: &str, client_nonce: [u8; NONCE_LEN]) -> Self {
        // Postgres ignores the SCRAM username (the startup packet names the role), and libpq
        // sends it empty; so do we.
        Self::with_user_and_nonce_text("", password, &BASE64.encode(client_nonce))
    }

    /// Like [`ScramClient::new`] with a chosen username and text nonce, so tests can replay
    /// RFC 7677's exchange. The username must already be a saslname (no ',' or '=').
    pub(crate) fn with_user_and_nonce_text(user: &str, password: &str, client_nonce: &str) -> Self {
        ScramClient {
            password: password.to_string(),
            client_first_bare: format!("n={user},r={client_nonce}"),
            client_nonce: client_nonce.to_string(),
            state: State::Initial,
        }
    }

    /// The client-first-message: `n,,n=,r=<nonce>`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first-message, returns the client-final-message.
    ///
    /// `salted(salt, iterations)` must return [`salted_password`] for this client's password;
    /// it is a closure so the caller can cache PBKDF2 per (password, salt, iterations) instead
    /// of paying for it on every server conn.
    pub fn server_first(
        &mut self,
        msg: &[u8],
        salted: impl FnOnce(&[u8], u32) -> [u8; 32],
    ) -> Result<Vec<u8>, AuthError> {
        let State::Initial = std::mem::replace(&mut self.state, State::Done) else {
            return Err(AuthError::Malformed("server-first message out of order"));
        };
        let server_first = text(msg)?;
        let parsed = parse_server_first(server_first)?;
        // The server must extend our nonce, not replace it, or the exchange could be a replay.
        let server_part = parsed
            .nonce
            .strip_prefix(self.client_nonce.as_str())
            .ok_or(AuthError::Malformed(
                "server nonce does not extend client nonce",
            ))?;
        if server_part.is_empty() {
            return Err(AuthError::Malformed(
                "server nonce adds nothing to client nonce",
            ));
        }
        let keys = Keys::from_salted(&salted(&parsed.salt, parsed.iterations));
        let without_proof = format!("c={GS2_HEADER_B64},r={}", parsed.nonce);
        let auth_message = auth_message(&self.client_first_bare, server_first, &without_proof);
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage).
        let mut proof = hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        xor_in_place(&mut proof, &keys.client_key);
        self.state = State::AwaitServerFinal {
            server_signature: hmac(&keys.server_key, &[auth_message.as_bytes()]),
        };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// [`ScramClient::server_first`] that runs PBKDF2 itself, for callers without a cache.
    pub fn server_first_uncached(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let password = std::mem::take(&mut self.password);
        let result = self.server_first(msg, |salt, iterations| {
            salted_password(&password, salt, iterations)
        });
        self.password = password;
        result
    }

    /// Checks the server-final-message: the server must prove it knows the password too, or
    /// sleddog could be talking to an impostor. `e=<reason>` becomes `ServerRejected`.
    pub fn server_final(&self, msg: &[u8]) -> Result<(), AuthError> {
        let State::AwaitServerFinal { server_signature } = &self.state else {
            return Err(AuthError::Malformed("server-final message out of order"));
        };
        match parse_server_final(text(msg)?)? {
            ServerFinal::Error(reason) => Err(AuthError::ServerRejected(reason.to_string())),
            ServerFinal::Verifier(signature) if ct_eq(&signature, server_signature) => Ok(()),
            ServerFinal::Verifier(_) => Err(AuthError::ServerSignatureMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_first_is_libpq_shaped() {
        let client = ScramClient::new("pw", [0; 18]);
        assert_eq!(client.client_first(), b"n,,n=,r=AAAAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn rejects_server_nonce_that_does_not_extend_ours() {
        let fixed = |_: &[u8], _: u32| [0u8; 32];
        let mut client = ScramClient::with_user_and_nonce_text("", "pw", "abc");
        assert_eq!(
            client
                .server_first(b"r=xyz123,s=QUJD,i=4096", fixed)
                .unwrap_err(),
            AuthError::Malformed("server nonce does not extend client nonce")
        );
        let mut client = ScramClient::with_user_and_nonce_text("", "pw", "abc");
        assert_eq!(
            client
                .server_first(b"r=abc,s=QUJD,i=4096", fixed)
                .unwrap_err(),
            AuthError::Malformed("server nonce adds nothing to client nonce")
        );
    }

    #[test]
    fn server_error_text_is_reported() {
        let mut client = ScramClient::with_user_and_nonce_text("", "pw", "abc");
        client
            .server_first(b"r=abcdef,s=QUJD,i=1", |_, _| [0u8; 32])
            .unwrap();
        assert_eq!(
            client.server_final(b"e=invalid-proof").unwrap_err(),
            AuthError::ServerRejected("invalid-proof".into())
        );
        let wrong = format!("v={}", BASE64.encode([0u8; 32]));
        assert_eq!(
            client.server_final(wrong.as_bytes()).unwrap_err(),
            AuthError::ServerSignatureMismatch
        );
    }

    #[test]
    fn out_of_order_messages_fail_cleanly() {
        let mut client = ScramClient::new("pw", [0; 18]);
        assert!(client.server_final(b"v=AAAA").is_err());
        assert!(client.server_first(b"garbage", |_, _| [0; 32]).is_err());
        // The first error ended the exchange.
        let again = format!("r={}X,s=QUJD,i=1", BASE64.encode([0u8; 18]));
        assert!(client
            .server_first(again.as_bytes(), |_, _| [0; 32])
            .is_err());
    }
}
