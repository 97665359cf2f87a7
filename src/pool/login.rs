//! Logging in to Postgres and reading the reply to a statement of sleddog's
//! own, without I/O: the async server connections of the cores and the
//! blocking probes of the control thread drive the same steps
//! ("protocol-flow", Start-up and Simple Query).
//!
//! Must not: read or write sockets, or know about pools and clients.

use bytes::{Bytes, BytesMut};

use crate::auth::{self, ScramClient};
use crate::protocol::backend::{
    data_row_values, Authentication, BackendKind, BackendMessage, TransactionStatus,
};
use crate::protocol::frame;
use crate::protocol::startup::{self, ProtocolVersion};
use crate::protocol::write;

use super::server_conn::{ServerError, ServerLogin};

/// What the login learned once the server is ready for queries.
#[derive(Debug, Default)]
pub struct LoggedIn {
    /// ParameterStatus values, in the order the server sent them.
    pub params: Vec<(String, String)>,
    /// BackendKeyData: process id and secret key.
    pub process_id: u32,
    pub secret_key: Bytes,
}

/// The login exchange, one server message at a time.
pub struct LoginSteps<'a> {
    login: &'a ServerLogin,
    scram: Option<ScramClient>,
    authenticated: bool,
    done: LoggedIn,
}

impl<'a> LoginSteps<'a> {
    /// Starts a login as `application_name`; the startup packet goes to `out`.
    pub fn start(
        login: &'a ServerLogin,
        application_name: &str,
        out: &mut BytesMut,
    ) -> LoginSteps<'a> {
        startup::encode_startup(
            ProtocolVersion { major: 3, minor: 0 },
            &[
                ("user", login.user.as_str()),
                ("database", login.database.as_str()),
                ("application_name", application_name),
            ],
            out,
        );
        LoginSteps {
            login,
            scram: None,
            authenticated: false,
            done: LoggedIn::default(),
        }
    }

    /// Takes one whole server message; what to send back goes to `out`.
    /// `salted` derives the SCRAM key (callers cache it). Some once the
    /// server is ready for queries.
    pub fn on_message(
        &mut self,
        message: &[u8],
        salted: impl FnOnce(&str, &[u8], u32) -> [u8; 32],
        out: &mut BytesMut,
    ) -> Result<Option<LoggedIn>, ServerError> {
        let password = || {
            self.login
                .password
                .as_deref()
                .ok_or(ServerError::NoPassword)
        };
        match BackendMessage::decode(message)? {
            BackendMessage::Authentication(Authentication::Ok) => self.authenticated = true,
            BackendMessage::Authentication(Authentication::CleartextPassword) => {
                write::password_message(out, password()?);
            }
            BackendMessage::Authentication(Authentication::Md5Password { salt }) => {
                let hashed = auth::md5_hash(&self.login.user, password()?, salt);
                write::password_message(out, &hashed);
            }
            BackendMessage::Authentication(Authentication::Sasl { mechanisms }) => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(ServerError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                }
                let client = ScramClient::new(password()?, auth::random_bytes());
                write::sasl_initial_response(out, "SCRAM-SHA-256", &client.client_first());
                self.scram = Some(client);
            }
            BackendMessage::Authentication(Authentication::SaslContinue(data)) => {
                let password = password()?;
                let client = self
                    .scram
                    .as_mut()
                    .ok_or(ServerError::UnsupportedAuth("SASL continue before start"))?;
                let reply = client
                    .server_first(data, |salt, iterations| salted(password, salt, iterations))?;
                write::sasl_response(out, &reply);
            }
            BackendMessage::Authentication(Authentication::SaslFinal(data)) => {
                let client = self
                    .scram
                    .as_ref()
                    .ok_or(ServerError::UnsupportedAuth("SASL final before start"))?;
                client.server_final(data)?;
            }
            BackendMessage::Authentication(Authentication::Other(_)) => {
                return Err(ServerError::UnsupportedAuth("GSS/SSPI/Kerberos"));
            }
            BackendMessage::ParameterStatus { name, value } => {
                set_param(&mut self.done.params, name, value);
            }
            BackendMessage::BackendKeyData {
                process_id,
                secret_key,
            } => {
                self.done.process_id = process_id;
                self.done.secret_key = Bytes::copy_from_slice(secret_key);
            }
            BackendMessage::ReadyForQuery(_) if self.authenticated => {
                return Ok(Some(std::mem::take(&mut self.done)));
            }
            BackendMessage::ErrorResponse(fields) => return Err(rejected(&fields)),
            _ => {}
        }
        Ok(None)
    }
}

/// Records a ParameterStatus value, replacing an earlier one of the name.
pub fn set_param(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    match params.iter_mut().find(|(n, _)| n == name) {
        Some(entry) => entry.1 = value.to_owned(),
        None => params.push((name.to_owned(), value.to_owned())),
    }
}

/// The reply to one simple Query of sleddog's own, read message by message:
/// the bodies of its DataRows, and it must end without an error in the
/// transaction status expected (Idle, unless `opening_transaction`).
#[derive(Default)]
pub struct OwnQueryReply {
    rows: Vec<Bytes>,
    failure: Option<ServerError>,
    /// The query is a client's `BEGIN`: it must leave a transaction open.
    opens_transaction: bool,
}

impl OwnQueryReply {
    /// The reply to a `BEGIN`: it must end InTransaction.
    pub fn opening_transaction() -> Self {
        OwnQueryReply {
            opens_transaction: true,
            ..OwnQueryReply::default()
        }
    }

    /// Takes one whole message (`message` owns it, so rows are kept without a
    /// copy). ParameterStatus values go to `params`. Some at ReadyForQuery.
    pub fn on_message(
        &mut self,
        message: &Bytes,
        params: &mut Vec<(String, String)>,
    ) -> Result<Option<Vec<Bytes>>, ServerError> {
        match BackendMessage::decode(message)? {
            BackendMessage::ErrorResponse(fields) => self.failure = Some(rejected(&fields)),
            BackendMessage::ParameterStatus { name, value } => set_param(params, name, value),
            BackendMessage::Other(BackendKind::DataRow) => {
                self.rows.push(message.slice(frame::HEADER_LEN..));
            }
            BackendMessage::ReadyForQuery(status) => {
                if let Some(error) = self.failure.take() {
                    return Err(error);
                }
                let expected = if self.opens_transaction {
                    TransactionStatus::InTransaction
                } else {
                    TransactionStatus::Idle
                };
                if status != expected {
                    let message = if self.opens_transaction {
                        "BEGIN did not open a transaction"
                    } else {
                        "still in a transaction after a statement of the pool's own"
                    };
                    return Err(ServerError::Rejected {
                        sqlstate: "25000".into(),
                        message: message.into(),
                    });
                }
                return Ok(Some(std::mem::take(&mut self.rows)));
            }
            _ => {}
        }
        Ok(None)
    }
}

pub fn rejected(fields: &crate::protocol::backend::ErrorFields<'_>) -> ServerError {
    ServerError::Rejected {
        sqlstate: fields.code().unwrap_or("XX000").to_owned(),
        message: fields.message().unwrap_or("unknown error").to_owned(),
    }
}

/// The text values of a DataRow body; None for SQL NULL. Err when the body
/// is malformed.
pub fn row_values(body: &[u8]) -> Result<Vec<Option<String>>, ServerError> {
    Ok(data_row_values(body)?
        .into_iter()
        .map(|value| value.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Bytes {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
        Bytes::from(out)
    }

    fn login() -> ServerLogin {
        ServerLogin {
            user: "u".into(),
            password: Some("pw".into()),
            database: "d".into(),
        }
    }

    #[test]
    fn a_begin_must_leave_a_transaction_open() {
        let mut params = Vec::new();
        let mut reply = OwnQueryReply::opening_transaction();
        assert!(reply
            .on_message(&msg(b'C', b"BEGIN\0"), &mut params)
            .unwrap()
            .is_none());
        assert!(reply.on_message(&msg(b'Z', b"T"), &mut params).is_ok());
        let mut reply = OwnQueryReply::opening_transaction();
        assert!(reply.on_message(&msg(b'Z', b"I"), &mut params).is_err());
        let mut reply = OwnQueryReply::opening_transaction();
        let error = msg(b'E', b"SERROR\0C0A000\0Mnot in a hot standby\0\0");
        assert!(reply.on_message(&error, &mut params).unwrap().is_none());
        match reply.on_message(&msg(b'Z', b"I"), &mut params) {
            Err(ServerError::Rejected { sqlstate, .. }) => assert_eq!(sqlstate, "0A000"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn md5_login_then_ready() {
        let login = login();
        let mut out = BytesMut::new();
        let mut steps = LoginSteps::start(&login, "sleddog", &mut out);
        assert!(!out.is_empty(), "startup packet");
        out.clear();
        let no_scram = |_: &str, _: &[u8], _: u32| -> [u8; 32] { unreachable!() };
        let md5 = msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        assert!(steps
            .on_message(&md5, no_scram, &mut out)
            .unwrap()
            .is_none());
        assert_eq!(out[0], b'p');
        let expected = auth::md5_hash("u", "pw", [1, 2, 3, 4]);
        assert_eq!(&out[5..5 + expected.len()], expected.as_bytes());
        out.clear();
        // ReadyForQuery before AuthenticationOk is not the end of a login.
        let ready = msg(b'Z', b"I");
        assert!(steps
            .on_message(&ready, no_scram, &mut out)
            .unwrap()
            .is_none());
        steps
            .on_message(&msg(b'R', &[0, 0, 0, 0]), no_scram, &mut out)
            .unwrap();
        steps
            .on_message(&msg(b'S', b"server_version\x0015.1\0"), no_scram, &mut out)
            .unwrap();
        steps
            .on_message(&msg(b'K', &[0, 0, 0, 7, 9, 9, 9, 9]), no_scram, &mut out)
            .unwrap();
        let done = steps
            .on_message(&ready, no_scram, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(done.params, [("server_version".into(), "15.1".into())]);
        assert_eq!(done.process_id, 7);
        assert_eq!(&done.secret_key[..], [9, 9, 9, 9]);
        assert!(out.is_empty());
    }

    #[test]
    fn login_error_and_missing_password() {
        let mut login = login();
        let mut out = BytesMut::new();
        let mut steps = LoginSteps::start(&login, "x", &mut out);
        let error = msg(b'E', b"SFATAL\0C28P01\0Mbad password\0\0");
        let no_scram = |_: &str, _: &[u8], _: u32| -> [u8; 32] { unreachable!() };
        match steps.on_message(&error, no_scram, &mut out) {
            Err(ServerError::Rejected { sqlstate, .. }) => assert_eq!(sqlstate, "28P01"),
            other => panic!("{other:?}"),
        }
        login.password = None;
        let mut steps = LoginSteps::start(&login, "x", &mut out);
        let clear = msg(b'R', &[0, 0, 0, 3]);
        assert!(matches!(
            steps.on_message(&clear, no_scram, &mut out),
            Err(ServerError::NoPassword)
        ));
    }

    #[test]
    fn own_query_rows_and_failures() {
        let mut params = Vec::new();
        let mut reply = OwnQueryReply::default();
        let row = msg(b'D', &[0, 2, 0, 0, 0, 1, b't', 255, 255, 255, 255]);
        assert!(reply.on_message(&row, &mut params).unwrap().is_none());
        let rows = reply
            .on_message(&msg(b'Z', b"I"), &mut params)
            .unwrap()
            .unwrap();
        assert_eq!(row_values(&rows[0]).unwrap(), [Some("t".into()), None]);
        assert!(row_values(&[0, 1, 0, 0, 0, 9]).is_err());

        let mut reply = OwnQueryReply::default();
        let error = msg(b'E', b"SERROR\0C42P01\0Mno table\0\0");
        assert!(reply.on_message(&error, &mut params).unwrap().is_none());
        assert!(reply.on_message(&msg(b'Z', b"I"), &mut params).is_err());
        let mut reply = OwnQueryReply::default();
        assert!(reply.on_message(&msg(b'Z', b"T"), &mut params).is_err());
    }
}
