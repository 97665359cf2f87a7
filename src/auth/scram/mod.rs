//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as Postgres speaks it (PostgreSQL docs
//! "sasl-authentication" and "SCRAM-SHA-256 authentication").
//!
//! Owns: verifiers ([`ScramSecret`], the `pg_authid` form), PBKDF2, and the two state machines
//! [`ScramServer`] (a client logs in to sleddog) and [`ScramClient`] (sleddog logs in to
//! Postgres). Must not do I/O or draw randomness: nonces come in through constructors.
//!
//! Postgres deviations from the RFCs that we follow:
//! - the username in client-first (`n=`) is ignored; the startup packet's user counts;
//! - no authorization identity (`a=`) and no mandatory extensions (`m=`);
//! - SASLprep failures fall back to the raw password (see [`saslprep`]).
//!
//! Channel binding: we have no TLS yet, so we never advertise SCRAM-SHA-256-PLUS. The gs2 flags
//! "n" (client does not support binding) and "y" (client supports it but thinks we do not) are
//! therefore both honest; "p=" is refused. When TLS arrives, "y" over TLS must be refused as a
//! downgrade, as Postgres does.

mod client;
mod message;
mod server;

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{AuthError, ITERATIONS_MAX};

pub use self::client::ScramClient;
pub use self::server::ScramServer;

/// Salt length for secrets sleddog derives itself; Postgres uses 16 bytes too.
pub const SALT_LEN: usize = 16;

/// Raw nonce length; base64 makes it 24 printable characters, like Postgres's nonces.
pub const NONCE_LEN: usize = 18;

/// Mechanism name sent in AuthenticationSASL and SASLInitialResponse.
pub const MECHANISM: &str = "SCRAM-SHA-256";

type HmacSha256 = Hmac<Sha256>;

/// What a server keeps to check a SCRAM login without knowing the password
/// (RFC 5802 section 3): StoredKey = H(ClientKey), ServerKey = HMAC(SaltedPassword, "Server Key").
///
/// `PartialEq` is not constant-time: use it for configuration, never to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramSecret {
    /// The keys are redacted: either one lets an attacker impersonate a side of the exchange.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &BASE64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl ScramSecret {
    /// Parses a verifier as stored in `pg_authid.rolpassword`:
    /// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(verifier: &str) -> Result<Self, AuthError> {
        let bad = |why: &str| AuthError::BadVerifier(why.to_string());
        let mut sections = verifier.split('$');
        if sections.next() != Some(MECHANISM) {
            return Err(bad("does not start with SCRAM-SHA-256$"));
        }
        let (params, keys) = match (sections.next(), sections.next(), sections.next()) {
            (Some(params), Some(keys), None) => (params, keys),
            _ => return Err(bad("expected three '$'-separated sections")),
        };
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| bad("expected <iterations>:<salt>"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| bad("expected <StoredKey>:<ServerKey>"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("iteration count is not a number"))?;
        if !iterations_in_range(iterations) {
            return Err(bad("iteration count out of range"));
        }
        let salt = BASE64.decode(salt).map_err(|_| bad("salt is not base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        let decode_key = |text: &str, what: &str| -> Result<[u8; 32], AuthError> {
            let bytes = BASE64
                .decode(text)
                .map_err(|_| bad(&format!("{what} is not base64")))?;
            bytes
                .try_into()
                .map_err(|_| bad(&format!("{what} is not 32 bytes")))
        };
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// Derives the secret for `password` (RFC 5802 section 3). Runs PBKDF2: `iterations`
    /// HMACs, about a millisecond per 4096 in release builds, so callers on a core cache it.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        let keys = Keys::from_salted(&salted);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    /// Formats the secret the way Postgres stores it; inverse of [`ScramSecret::parse`].
    pub fn to_verifier(&self) -> String {
        format!(
            "{MECHANISM}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key),
        )
    }
}

/// SaltedPassword = PBKDF2-HMAC-SHA256(SASLprep(password), salt, iterations), 32 bytes
/// (RFC 5802 section 3, RFC 8018 section 5.2 with a single output block).
///
/// An iteration count of 0 is computed as 1; verifier parsing and [`ScramServer::new`] reject 0,
/// so this only matters for callers that skip validation.
pub fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let keyed = HmacSha256::new_from_slice(saslprep(password).as_bytes())
        .expect("HMAC accepts keys of any length");
    // U1 = HMAC(P, salt || INT(1)); Ui = HMAC(P, U(i-1)); result = U1 ^ U2 ^ ... ^ Uc.
    // Cloning the keyed state skips re-hashing the key on every round.
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut block: [u8; 32] = mac.finalize().into_bytes().into();
    let mut result = block;
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&block);
        block = mac.finalize().into_bytes().into();
        xor_in_place(&mut result, &block);
    }
    result
}

/// SASLprep (RFC 4013) the way Postgres applies it (`pg_saslprep`): a pure-ASCII password is
/// used unchanged, and a password SASLprep rejects is also used unchanged.
///
/// We implement only the ASCII half: non-ASCII passwords pass through unchanged. That agrees
/// with Postgres whenever NFKC normalization and the RFC 4013 mappings leave the text alone
/// (e.g. precomposed accented letters), and differs for compatibility characters, non-ASCII
/// spaces and soft hyphens. Full SASLprep needs Unicode tables (a crate we do not carry yet).
pub(crate) fn saslprep(password: &str) -> &str {
    password
}

/// The per-password keys both sides derive from SaltedPassword.
struct Keys {
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Keys {
    fn from_salted(salted: &[u8; 32]) -> Self {
        let client_key = hmac(salted, &[b"Client Key"]);
        Keys {
            client_key,
            stored_key: sha256(&client_key),
            server_key: hmac(salted, &[b"Server Key"]),
        }
    }
}

fn iterations_in_range(iterations: u32) -> bool {
    (1..=ITERATIONS_MAX).contains(&iterations)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor_in_place(acc: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// AuthMessage = client-first-message-bare "," server-first-message ","
/// client-final-message-without-proof (RFC 5802 section 3).
fn auth_message(client_first_bare: &str, server_first: &str, client_final_bare: &str) -> String {
    format!("{client_first_bare},{server_first},{client_final_bare}")
}

#[cfg(test)]
mod tests {
    use super::super::random_bytes;
    use super::*;
    use crate::test_rng::Rng;

    // RFC 7677 section 3: user "user", password "pencil".
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    /// The RFC's salt and password as a verifier, computed independently with Python's
    /// hashlib.pbkdf2_hmac + hmac (the RFC does not print StoredKey/ServerKey).
    const RFC_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
                                WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                                wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    /// Produced by PostgreSQL 15.18: CREATE ROLE u1 PASSWORD 'secret';
    /// SELECT rolpassword FROM pg_authid WHERE rolname = 'u1';
    const POSTGRES_VERIFIER_SECRET: &str = "SCRAM-SHA-256$4096:f0G1rZWA9R+Eeeoo2ncOpg==$\
                                            NSBcrzuXJt1RQSTAvjo1xjbx9c8nvubpQjGwVhjHbkY=:\
                                            B4gl3JieMDnuPXhnndsMeg3ap3k5uz0wCjA7a31neNI=";

    fn rfc_secret() -> ScramSecret {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramSecret::from_password("pencil", &salt, 4096)
    }

    /// A cheap secret for state-machine tests that do not need real PBKDF2 cost.
    fn cheap_secret(password: &str) -> ScramSecret {
        ScramSecret::from_password(password, b"sleddog salt", 3)
    }

    #[test]
    fn from_password_matches_rfc_derived_verifier() {
        assert_eq!(rfc_secret().to_verifier(), RFC_VERIFIER);
        assert_eq!(ScramSecret::parse(RFC_VERIFIER).unwrap(), rfc_secret());
    }

    #[test]
    fn from_password_matches_real_postgres_verifier() {
        let parsed = ScramSecret::parse(POSTGRES_VERIFIER_SECRET).unwrap();
        assert_eq!(parsed.iterations, 4096);
        let derived = ScramSecret::from_password("secret", &parsed.salt, parsed.iterations);
        assert_eq!(derived, parsed);
        assert_eq!(derived.to_verifier(), POSTGRES_VERIFIER_SECRET);
    }

    #[test]
    fn verifier_round_trips() {
        let secret = cheap_secret("hunter2");
        assert_eq!(ScramSecret::parse(&secret.to_verifier()).unwrap(), secret);
    }

    #[test]
    fn verifier_parse_rejects_bad_input() {
        let good = RFC_VERIFIER;
        let bad = [
            "",
            "md5abc",
            &good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
            &good.replace("$4096:", "$0:"),
            &good.replace("$4096:", "$10000001:"),
            &good.replace("$4096:", "$x:"),
            &good.replace("$4096:", "$4096"),
            &good.replace("W22ZaJ0SNY7soEsUEjb6gQ==", ""),
            &good.replace("W22ZaJ0SNY7soEsUEjb6gQ==", "!!"),
            &good.replace("WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", "AAAA"),
            &good.replace(":wfPL", "wfPL"),
            &format!("{good}$extra"),
        ];
        for verifier in bad {
            assert!(
                matches!(ScramSecret::parse(verifier), Err(AuthError::BadVerifier(_))),
                "{verifier}"
            );
        }
        assert!(ScramSecret::parse(&good.replace("$4096:", "$10000000:")).is_ok());
    }

    #[test]
    fn debug_redacts_keys() {
        let text = format!("{:?}", rfc_secret());
        assert!(text.contains("redacted"));
        assert!(!text.contains("WG5d8oPm"));
    }

    #[test]
    fn rfc7677_client_side() {
        let mut client = ScramClient::with_user_and_nonce_text("user", "pencil", RFC_CLIENT_NONCE);
        assert_eq!(client.client_first(), RFC_CLIENT_FIRST.as_bytes());
        let mut salt_seen = Vec::new();
        let client_final = client
            .server_first(RFC_SERVER_FIRST.as_bytes(), |salt, iterations| {
                salt_seen = salt.to_vec();
                assert_eq!(iterations, 4096);
                salted_password("pencil", salt, iterations)
            })
            .unwrap();
        assert_eq!(
            salt_seen,
            BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap()
        );
        assert_eq!(
            std::str::from_utf8(&client_final).unwrap(),
            RFC_CLIENT_FINAL
        );
        client.server_final(RFC_SERVER_FINAL.as_bytes()).unwrap();
        let tampered = RFC_SERVER_FINAL.replace("v=6", "v=7");
        assert_eq!(
            client.server_final(tampered.as_bytes()).unwrap_err(),
            AuthError::ServerSignatureMismatch
        );
    }

    #[test]
    fn rfc7677_client_side_uncached() {
        let mut client = ScramClient::with_user_and_nonce_text("user", "pencil", RFC_CLIENT_NONCE);
        let client_final = client
            .server_first_uncached(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(client_final, RFC_CLIENT_FINAL.as_bytes());
    }

    #[test]
    fn rfc7677_server_side() {
        let mut server =
            ScramServer::with_nonce_text(vec![rfc_secret()], RFC_SERVER_NONCE.into()).unwrap();
        let server_first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&server_first).unwrap(),
            RFC_SERVER_FIRST
        );
        let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(&server_final).unwrap(),
            RFC_SERVER_FINAL
        );
        assert_eq!(server.matched(), Some(0));
    }

    // A real exchange between libpq (psql 15) and PostgreSQL 15.18 for role u1 (verifier
    // POSTGRES_VERIFIER_SECRET), recorded by a logging TCP relay, without sslmode.
    const LIBPQ_CLIENT_FIRST: &str = "n,,n=,r=hfbuxK4inYRbXGOevuhrk9XT";
    const PG_SERVER_NONCE: &str = "nUa0T2Ui3loWg8zPyIxB4zv2";
    const PG_SERVER_FIRST: &str = "r=hfbuxK4inYRbXGOevuhrk9XTnUa0T2Ui3loWg8zPyIxB4zv2,\
                                   s=f0G1rZWA9R+Eeeoo2ncOpg==,i=4096";
    const LIBPQ_CLIENT_FINAL: &str = "c=biws,r=hfbuxK4inYRbXGOevuhrk9XTnUa0T2Ui3loWg8zPyIxB4zv2,\
                                      p=Dv75tGUoIdOwiv6QfAbx7Y5vGYvy61Az23PAljdeyxw=";
    const PG_SERVER_FINAL: &str = "v=Pgp+XMxiKnM+avL0mIKucPCE7R7vri7Qupy17BsxzPY=";

    #[test]
    fn recorded_postgres_exchange_server_side() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER_SECRET).unwrap();
        let mut server =
            ScramServer::with_nonce_text(vec![secret], PG_SERVER_NONCE.into()).unwrap();
        let server_first = server.client_first(LIBPQ_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(server_first, PG_SERVER_FIRST.as_bytes());
        let server_final = server.client_final(LIBPQ_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(server_final, PG_SERVER_FINAL.as_bytes());
    }

    #[test]
    fn recorded_postgres_exchange_client_side() {
        let client_nonce = LIBPQ_CLIENT_FIRST.trim_start_matches("n,,n=,r=");
        let mut client = ScramClient::with_user_and_nonce_text("", "secret", client_nonce);
        assert_eq!(client.client_first(), LIBPQ_CLIENT_FIRST.as_bytes());
        let client_final = client
            .server_first_uncached(PG_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(client_final, LIBPQ_CLIENT_FINAL.as_bytes());
        client.server_final(PG_SERVER_FINAL.as_bytes()).unwrap();
    }

    /// Runs a full exchange between our two sides; returns the server's verdict.
    fn exchange(client_password: &str, candidates: Vec<ScramSecret>) -> Result<usize, AuthError> {
        let mut server = ScramServer::new(candidates, random_bytes())?;
        let mut client = ScramClient::new(client_password, random_bytes());
        let server_first = server.client_first(&client.client_first())?;
        let client_final = client.server_first(&server_first, |salt, iterations| {
            salted_password(client_password, salt, iterations)
        })?;
        let server_final = server.client_final(&client_final)?;
        client.server_final(&server_final)?;
        Ok(server
            .matched()
            .expect("a successful exchange names its candidate"))
    }

    #[test]
    fn round_trip_right_and_wrong_password() {
        assert_eq!(exchange("hunter2", vec![cheap_secret("hunter2")]), Ok(0));
        assert_eq!(
            exchange("hunter3", vec![cheap_secret("hunter2")]),
            Err(AuthError::WrongPassword)
        );
        assert_eq!(exchange("", vec![cheap_secret("")]), Ok(0));
    }

    #[test]
    fn round_trip_against_real_postgres_verifier() {
        let secret = ScramSecret::parse(POSTGRES_VERIFIER_SECRET).unwrap();
        assert_eq!(exchange("secret", vec![secret.clone()]), Ok(0));
        assert_eq!(
            exchange("Secret", vec![secret]),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn second_candidate_matches() {
        let candidates = vec![cheap_secret("old"), cheap_secret("new"), cheap_secret("x")];
        assert_eq!(exchange("new", candidates.clone()), Ok(1));
        assert_eq!(exchange("old", candidates.clone()), Ok(0));
        assert_eq!(
            exchange("neither", candidates),
            Err(AuthError::WrongPassword)
        );
    }

    #[test]
    fn doomed_exchange_looks_normal_then_fails() {
        let mut server = ScramServer::doomed(b"mock salt".to_vec(), 3, [5; 18]).unwrap();
        let mut client = ScramClient::new("anything", [6; 18]);
        let server_first = server.client_first(&client.client_first()).unwrap();
        let client_final = client
            .server_first(&server_first, |salt, i| {
                salted_password("anything", salt, i)
            })
            .unwrap();
        assert_eq!(
            server.client_final(&client_final).unwrap_err(),
            AuthError::WrongPassword
        );
        assert_eq!(server.matched(), None);
        assert!(ScramServer::doomed(Vec::new(), 3, [5; 18]).is_err());
    }

    #[test]
    fn non_ascii_password_passes_through() {
        // Precomposed text is already NFKC, so Postgres's SASLprep leaves it unchanged too.
        assert_eq!(
            exchange(
                "p\u{e4}ssw\u{f6}rd",
                vec![cheap_secret("p\u{e4}ssw\u{f6}rd")]
            ),
            Ok(0)
        );
    }

    #[test]
    fn iteration_count_zero_computes_as_one() {
        assert_eq!(salted_password("a", b"s", 0), salted_password("a", b"s", 1));
        assert_ne!(salted_password("a", b"s", 1), salted_password("a", b"s", 2));
    }

    /// Either random bytes or a valid message with a few bytes changed, inserted or cut.
    trait Mutate {
        fn input(&mut self, valid: &[u8]) -> Vec<u8>;
    }

    impl Mutate for Rng {
        fn input(&mut self, valid: &[u8]) -> Vec<u8> {
            const ALPHABET: &[u8] = b"nyp=,carsiev mAZ09+/\x00\xff\xc3";
            if self.below(4) == 0 {
                return (0..self.below(64)).map(|_| self.next() as u8).collect();
            }
            let mut bytes = valid.to_vec();
            for _ in 0..=self.below(3) {
                let at = self.below(bytes.len() + 1);
                let byte = ALPHABET[self.below(ALPHABET.len())];
                match self.below(3) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let seed = 0x05ee_dd06_u64;
        eprintln!("fuzz seed {seed:#x}");
        let mut rng = Rng::new(seed);
        let secret = cheap_secret("pw");
        let cheap_salted = |_: &[u8], _: u32| [7u8; 32];
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut server =
                ScramServer::with_nonce_text(vec![secret.clone()], RFC_SERVER_NONCE.into())
                    .unwrap();
            accepted += usize::from(
                server
                    .client_first(&rng.input(RFC_CLIENT_FIRST.as_bytes()))
                    .is_ok(),
            );

            let mut server =
                ScramServer::with_nonce_text(vec![secret.clone()], RFC_SERVER_NONCE.into())
                    .unwrap();
            server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
            let _ = server.client_final(&rng.input(RFC_CLIENT_FINAL.as_bytes()));

            let mut client = ScramClient::with_user_and_nonce_text("user", "pw", RFC_CLIENT_NONCE);
            let _ = client.server_first(&rng.input(RFC_SERVER_FIRST.as_bytes()), cheap_salted);

            let mut client = ScramClient::with_user_and_nonce_text("user", "pw", RFC_CLIENT_NONCE);
            client
                .server_first(RFC_SERVER_FIRST.as_bytes(), cheap_salted)
                .unwrap();
            let _ = client.server_final(&rng.input(RFC_SERVER_FINAL.as_bytes()));
        }
        // The mutator must leave some inputs valid, or it only exercises the first check.
        assert!(
            accepted > 100,
            "only {accepted} mutated client-first messages parsed"
        );
    }
}
