//! Client authentication at login, per `auth_type`, driving the sans-IO steps in
//! `crate::auth` over the client's socket.
//!
//! An unknown user goes through the same exchange as a known one with a wrong
//! password and gets the same FATAL 28P01, so the reply does not tell which.

use bytes::Bytes;

use crate::auth::{self, ScramSecret, ScramServer};
use crate::config::AuthType;
use crate::control::snapshot::{Login, Snapshot};
use crate::protocol::frontend::{decode_password, decode_sasl_initial, FrontendMessage};
use crate::protocol::{frame, write, DEFAULT_MAX_MESSAGE_LEN};
use crate::session::client::Client;

const SCRAM: &str = "SCRAM-SHA-256";

/// Authenticates `user`; on success AuthenticationOk is queued in `client.out`.
/// On failure the client has been sent a FATAL error.
pub async fn authenticate(client: &mut Client, snapshot: &Snapshot, user: &str) -> bool {
    let login = snapshot.logins.get(user);
    let verdict = match snapshot.auth_type {
        AuthType::Trust => Ok(login.is_some()),
        AuthType::Scram => scram(client, login).await,
        AuthType::Md5 => md5(client, user, login).await,
        AuthType::Plain => plain(client, login).await,
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

async fn plain(client: &mut Client, login: Option<&Login>) -> Result<bool, Failure> {
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
    // Only a SCRAM verifier is configured: derive the keys from what was sent.
    // This runs PBKDF2 on the core; cleartext auth with verifiers is rare.
    let by_verifier = login.scram.iter().any(|secret| {
        let derived = ScramSecret::from_password(password, &secret.salt, secret.iterations);
        auth::ct_eq(&derived.stored_key, &secret.stored_key)
    });
    Ok(by_verifier)
}

fn unguessable_secret() -> ScramSecret {
    ScramSecret {
        iterations: auth::DEFAULT_ITERATIONS,
        salt: auth::random_bytes::<16>().to_vec(),
        stored_key: auth::random_bytes(),
        server_key: auth::random_bytes(),
    }
}
