//! The server side of SCRAM-SHA-256: sleddog checking a client's password.
//!
//! Sans-IO: the session feeds in the SASLInitialResponse / SASLResponse payloads and sends
//! back what this returns in AuthenticationSASLContinue / AuthenticationSASLFinal
//! (PostgreSQL docs "sasl-authentication"). Must not do I/O or draw randomness.

use std::mem;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::super::{ct_eq, AuthError};
use super::message::{parse_client_final, parse_client_first, text};
use super::{
    auth_message, hmac, iterations_in_range, sha256, xor_in_place, ScramSecret, NONCE_LEN,
};

/// One login attempt. Holds StoredKey/ServerKey pairs, never passwords.
///
/// Several candidates let a user have more than one valid password (rotation); they must share
/// one salt and iteration count because the server-first message announces a single pair.
pub struct ScramServer {
    candidates: Vec<CandidateKeys>,
    salt_b64: String,
    iterations: u32,
    server_nonce: String,
    state: State,
}

struct CandidateKeys {
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

enum State {
    AwaitClientFirst,
    AwaitClientFinal {
        gs2_header: String,
        nonce: String,
        /// client-first-message-bare "," server-first-message: the start of AuthMessage.
        client_first_bare: String,
        server_first: String,
    },
    /// Finished, successfully or not; `matched` is the candidate index that authenticated.
    Done {
        matched: Option<usize>,
    },
}

impl ScramServer {
    /// Starts an exchange that succeeds if the client proves any one of `candidates`.
    /// `server_nonce` must come from a CSPRNG ([`crate::auth::random_bytes`]).
    pub fn new(
        candidates: Vec<ScramSecret>,
        server_nonce: [u8; NONCE_LEN],
    ) -> Result<Self, AuthError> {
        Self::with_nonce_text(candidates, BASE64.encode(server_nonce))
    }

    /// An exchange for a user that does not exist (or has no SCRAM secret): it runs the whole
    /// dialogue and then fails with `WrongPassword`, so a client cannot tell unknown users from
    /// wrong passwords. Postgres does the same with a mock salt; pass a salt that is stable per
    /// user name (e.g. derived from it with a process secret), or repeated probes give it away.
    pub fn doomed(
        salt: Vec<u8>,
        iterations: u32,
        server_nonce: [u8; NONCE_LEN],
    ) -> Result<Self, AuthError> {
        check_salt_and_iterations(&salt, iterations)?;
        Ok(ScramServer {
            candidates: Vec::new(),
            salt_b64: BASE64.encode(salt),
            iterations,
            server_nonce: BASE64.encode(server_nonce),
            state: State::AwaitClientFirst,
        })
    }

    /// Like [`ScramServer::new`] with the nonce already in text form, so tests can replay
    /// RFC 7677's exchange whose nonce is not base64 of 18 bytes. It must be printable.
    pub(crate) fn with_nonce_text(
        candidates: Vec<ScramSecret>,
        server_nonce: String,
    ) -> Result<Self, AuthError> {
        let first = candidates
            .first()
            .ok_or_else(|| AuthError::BadVerifier("no SCRAM secrets to check against".into()))?;
        let (salt, iterations) = (first.salt.clone(), first.iterations);
        if candidates
            .iter()
            .any(|c| c.salt != salt || c.iterations != iterations)
        {
            return Err(AuthError::BadVerifier(
                "candidate secrets differ in salt or iteration count".into(),
            ));
        }
        check_salt_and_iterations(&salt, iterations)?;
        let candidates = candidates
            .into_iter()
            .map(|c| CandidateKeys {
                stored_key: c.stored_key,
                server_key: c.server_key,
            })
            .collect();
        Ok(ScramServer {
            candidates,
            salt_b64: BASE64.encode(salt),
            iterations,
            server_nonce,
            state: State::AwaitClientFirst,
        })
    }

    /// Takes the client-first-message (SASLInitialResponse data), returns the
    /// server-first-message. Any error ends the exchange.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitClientFirst = mem::replace(&mut self.state, State::Done { matched: None })
        else {
            return Err(AuthError::Malformed("client-first message out of order"));
        };
        let parsed = parse_client_first(text(msg)?)?;
        let nonce = format!("{}{}", parsed.client_nonce, self.server_nonce);
        let server_first = format!("r={nonce},s={},i={}", self.salt_b64, self.iterations);
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitClientFinal {
            gs2_header: parsed.gs2_header.to_string(),
            nonce,
            client_first_bare: parsed.bare.to_string(),
            server_first,
        };
        Ok(reply)
    }

    /// Takes the client-final-message (SASLResponse data). On a valid proof returns the
    /// server-final-message (`v=<ServerSignature>`); a wrong proof is `WrongPassword`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::AwaitClientFinal {
            gs2_header,
            nonce,
            client_first_bare,
            server_first,
        } = mem::replace(&mut self.state, State::Done { matched: None })
        else {
            return Err(AuthError::Malformed("client-final message out of order"));
        };
        let parsed = parse_client_final(text(msg)?)?;
        // c= must echo the gs2 header, or a man in the middle could have stripped the
        // client's channel-binding request (RFC 5802 section 6).
        if !ct_eq(&parsed.channel_binding, gs2_header.as_bytes()) {
            return Err(AuthError::Malformed(
                "channel binding does not match gs2 header",
            ));
        }
        if !ct_eq(parsed.nonce.as_bytes(), nonce.as_bytes()) {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let auth_message = auth_message(&client_first_bare, &server_first, parsed.without_proof);
        let matched = self.find_match(&parsed.proof, auth_message.as_bytes());
        self.state = State::Done { matched };
        let Some(index) = matched else {
            return Err(AuthError::WrongPassword);
        };
        let signature = hmac(
            &self.candidates[index].server_key,
            &[auth_message.as_bytes()],
        );
        Ok(format!("v={}", BASE64.encode(signature)).into_bytes())
    }

    /// Which candidate (index into the `Vec` given to `new`) authenticated, once the exchange
    /// has succeeded.
    pub fn matched(&self) -> Option<usize> {
        match self.state {
            State::Done { matched } => matched,
            _ => None,
        }
    }

    /// ClientKey = proof XOR HMAC(StoredKey, AuthMessage); valid iff H(ClientKey) == StoredKey.
    /// Checks every candidate, so the time taken does not reveal which one matched.
    fn find_match(&self, proof: &[u8; 32], auth_message: &[u8]) -> Option<usize> {
        let mut matched = None;
        for (index, candidate) in self.candidates.iter().enumerate() {
            let mut client_key = hmac(&candidate.stored_key, &[auth_message]);
            xor_in_place(&mut client_key, proof);
            if ct_eq(&sha256(&client_key), &candidate.stored_key) && matched.is_none() {
                matched = Some(index);
            }
        }
        matched
    }
}

fn check_salt_and_iterations(salt: &[u8], iterations: u32) -> Result<(), AuthError> {
    if salt.is_empty() {
        return Err(AuthError::BadVerifier("salt is empty".into()));
    }
    if !iterations_in_range(iterations) {
        return Err(AuthError::BadVerifier(
            "iteration count out of range".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(password: &str) -> ScramSecret {
        // Few iterations: these tests are about the state machine, not PBKDF2.
        ScramSecret::from_password(password, b"0123456789abcdef", 2)
    }

    #[test]
    fn new_rejects_empty_and_mixed_candidates() {
        assert!(matches!(
            ScramServer::new(Vec::new(), [0; 18]),
            Err(AuthError::BadVerifier(_))
        ));
        let other_salt = ScramSecret::from_password("b", b"other salt", 2);
        assert!(matches!(
            ScramServer::new(vec![secret("a"), other_salt], [0; 18]),
            Err(AuthError::BadVerifier(_))
        ));
        let mut zero = secret("a");
        zero.iterations = 0;
        assert!(ScramServer::new(vec![zero], [0; 18]).is_err());
        let mut huge = secret("a");
        huge.iterations = 10_000_001;
        assert!(ScramServer::new(vec![huge], [0; 18]).is_err());
    }

    #[test]
    fn server_first_uses_base64_nonce_and_secret_params() {
        let mut server = ScramServer::new(vec![secret("a")], [0xff; 18]).unwrap();
        let reply = server.client_first(b"n,,n=,r=abc").unwrap();
        // base64 of 18 0xff bytes is 24 '/' characters.
        let expected = format!("r=abc{},s=MDEyMzQ1Njc4OWFiY2RlZg==,i=2", "/".repeat(24));
        assert_eq!(reply, expected.into_bytes());
    }

    #[test]
    fn out_of_order_messages_fail_cleanly() {
        let mut server = ScramServer::new(vec![secret("a")], [1; 18]).unwrap();
        assert!(server.client_final(b"c=biws,r=x,p=AAAA").is_err());
        // The first error ended the exchange.
        assert!(server.client_first(b"n,,n=,r=abc").is_err());
    }

    #[test]
    fn rejects_wrong_nonce_and_channel_binding() {
        let proof = BASE64.encode([0u8; 32]);
        let mut server = ScramServer::with_nonce_text(vec![secret("a")], "SRV".into()).unwrap();
        server.client_first(b"n,,n=,r=abc").unwrap();
        let msg = format!("c=biws,r=abcXXX,p={proof}");
        assert_eq!(
            server.client_final(msg.as_bytes()).unwrap_err(),
            AuthError::Malformed("nonce does not match")
        );

        let mut server = ScramServer::with_nonce_text(vec![secret("a")], "SRV".into()).unwrap();
        server.client_first(b"n,,n=,r=abc").unwrap();
        // "eSws" is base64("y,,"): the client claimed "n" in its first message.
        let msg = format!("c=eSws,r=abcSRV,p={proof}");
        assert_eq!(
            server.client_final(msg.as_bytes()).unwrap_err(),
            AuthError::Malformed("channel binding does not match gs2 header")
        );

        let mut server = ScramServer::with_nonce_text(vec![secret("a")], "SRV".into()).unwrap();
        server.client_first(b"y,,n=,r=abc").unwrap();
        let msg = format!("c=eSws,r=abcSRV,p={proof}");
        assert_eq!(
            server.client_final(msg.as_bytes()).unwrap_err(),
            AuthError::WrongPassword
        );
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let mut server = ScramServer::new(vec![secret("a")], [1; 18]).unwrap();
        assert_eq!(
            server
                .client_first(b"p=tls-server-end-point,,n=,r=abc")
                .unwrap_err(),
            AuthError::UnsupportedChannelBinding
        );
    }
}
