//! Messages a server sends: kind lookup and on-demand decoding.
//!
//! Owns the backend tag bytes and the layouts the proxy needs to read
//! ("protocol-message-formats"): authentication requests, key data, parameter
//! status, ready-for-query, errors and notices, command tags, notifications.
//! Everything else is classified by [`BackendKind`] and forwarded undecoded.
//! An ErrorResponse decoded here is data, not an `Err`.

use super::error::ProtocolError;
use super::frame::parts;
use super::read::Reader;
use super::startup::{CANCEL_KEY_LEN_MAX, CANCEL_KEY_LEN_MIN};

/// Every tagged message type a server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Authentication,
    BackendKeyData,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FunctionCallResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
}

impl BackendKind {
    #[inline]
    pub fn from_tag(tag: u8) -> Result<Self, ProtocolError> {
        Ok(match tag {
            b'R' => BackendKind::Authentication,
            b'K' => BackendKind::BackendKeyData,
            b'2' => BackendKind::BindComplete,
            b'3' => BackendKind::CloseComplete,
            b'C' => BackendKind::CommandComplete,
            b'd' => BackendKind::CopyData,
            b'c' => BackendKind::CopyDone,
            b'G' => BackendKind::CopyInResponse,
            b'H' => BackendKind::CopyOutResponse,
            b'W' => BackendKind::CopyBothResponse,
            b'D' => BackendKind::DataRow,
            b'I' => BackendKind::EmptyQueryResponse,
            b'E' => BackendKind::ErrorResponse,
            b'V' => BackendKind::FunctionCallResponse,
            b'v' => BackendKind::NegotiateProtocolVersion,
            b'n' => BackendKind::NoData,
            b'N' => BackendKind::NoticeResponse,
            b'A' => BackendKind::NotificationResponse,
            b't' => BackendKind::ParameterDescription,
            b'S' => BackendKind::ParameterStatus,
            b'1' => BackendKind::ParseComplete,
            b's' => BackendKind::PortalSuspended,
            b'Z' => BackendKind::ReadyForQuery,
            b'T' => BackendKind::RowDescription,
            other => return Err(ProtocolError::UnknownTag(other)),
        })
    }

    #[inline]
    pub fn tag(self) -> u8 {
        match self {
            BackendKind::Authentication => b'R',
            BackendKind::BackendKeyData => b'K',
            BackendKind::BindComplete => b'2',
            BackendKind::CloseComplete => b'3',
            BackendKind::CommandComplete => b'C',
            BackendKind::CopyData => b'd',
            BackendKind::CopyDone => b'c',
            BackendKind::CopyInResponse => b'G',
            BackendKind::CopyOutResponse => b'H',
            BackendKind::CopyBothResponse => b'W',
            BackendKind::DataRow => b'D',
            BackendKind::EmptyQueryResponse => b'I',
            BackendKind::ErrorResponse => b'E',
            BackendKind::FunctionCallResponse => b'V',
            BackendKind::NegotiateProtocolVersion => b'v',
            BackendKind::NoData => b'n',
            BackendKind::NoticeResponse => b'N',
            BackendKind::NotificationResponse => b'A',
            BackendKind::ParameterDescription => b't',
            BackendKind::ParameterStatus => b'S',
            BackendKind::ParseComplete => b'1',
            BackendKind::PortalSuspended => b's',
            BackendKind::ReadyForQuery => b'Z',
            BackendKind::RowDescription => b'T',
        }
    }
}

/// The transaction status byte of ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block; the server conn may be reused.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block; queries are refused until it ends.
    Failed,
}

impl TransactionStatus {
    #[inline]
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }

    #[inline]
    pub fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        match byte {
            b'I' => Ok(TransactionStatus::Idle),
            b'T' => Ok(TransactionStatus::InTransaction),
            b'E' => Ok(TransactionStatus::Failed),
            _ => Err(ProtocolError::Malformed("unknown transaction status")),
        }
    }
}

/// An AuthenticationRequest (tag `R`), by its Int32 code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// 0: AuthenticationOk.
    Ok,
    /// 3: AuthenticationCleartextPassword.
    CleartextPassword,
    /// 5: AuthenticationMD5Password.
    Md5Password { salt: [u8; 4] },
    /// 10: AuthenticationSASL, mechanisms in the server's order of preference.
    Sasl { mechanisms: Vec<&'a str> },
    /// 11: AuthenticationSASLContinue.
    SaslContinue(&'a [u8]),
    /// 12: AuthenticationSASLFinal.
    SaslFinal(&'a [u8]),
    /// Any other code (Kerberos 2, GSS 7/8, SSPI 9); the body is not decoded.
    Other(i32),
}

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

impl<'a> Authentication<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        Ok(match r.i32()? {
            AUTH_OK => Authentication::Ok,
            AUTH_CLEARTEXT => Authentication::CleartextPassword,
            AUTH_MD5 => Authentication::Md5Password { salt: r.array()? },
            AUTH_SASL => Authentication::Sasl {
                mechanisms: decode_mechanisms(r)?,
            },
            AUTH_SASL_CONTINUE => Authentication::SaslContinue(r.rest()),
            AUTH_SASL_FINAL => Authentication::SaslFinal(r.rest()),
            other => {
                r.rest();
                Authentication::Other(other)
            }
        })
    }
}

/// SASL mechanism names, ended by an empty name.
fn decode_mechanisms<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a str>, ProtocolError> {
    let mut mechanisms = Vec::new();
    loop {
        match r.cstr()? {
            "" => return Ok(mechanisms),
            name => mechanisms.push(name),
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse ("protocol-error-fields"):
/// a code byte and a string each, validated as UTF-8 when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// The body, final NUL included; known to be well formed.
    raw: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    /// Validates an ErrorResponse/NoticeResponse body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(body);
        while r.u8()? != 0 {
            r.cstr()?;
        }
        r.finish()?;
        Ok(ErrorFields { raw: body })
    }

    /// Fields in wire order as (field code, value).
    #[inline]
    pub fn iter(&self) -> ErrorFieldIter<'a> {
        ErrorFieldIter {
            reader: Reader::new(self.raw),
        }
    }

    /// The first field with this code.
    pub fn field(&self, code: u8) -> Option<&'a str> {
        self.iter()
            .find(|&(c, _)| c == code)
            .map(|(_, value)| value)
    }

    /// The non-localized severity (`V`, PostgreSQL 9.6+), else the localized `S`.
    pub fn severity(&self) -> Option<&'a str> {
        self.field(b'V').or_else(|| self.field(b'S'))
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> Option<&'a str> {
        self.field(b'C')
    }

    /// The primary message (`M`).
    pub fn message(&self) -> Option<&'a str> {
        self.field(b'M')
    }

    /// The detail (`D`).
    pub fn detail(&self) -> Option<&'a str> {
        self.field(b'D')
    }

    /// The hint (`H`).
    pub fn hint(&self) -> Option<&'a str> {
        self.field(b'H')
    }
}

/// The values of a DataRow body in column order, None for NULL
/// ("protocol-message-formats", DataRow). Trailing bytes are an error.
pub fn data_row_values(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body);
    let count = r.count()?;
    let values = (0..count)
        .map(|_| r.nullable_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    r.finish()?;
    Ok(values)
}

/// Iterator over [`ErrorFields`].
pub struct ErrorFieldIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for ErrorFieldIter<'a> {
    type Item = (u8, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        // `ErrorFields::parse` validated the layout, so errors here cannot
        // occur; stopping on one is still the safe reading.
        match self.reader.u8().ok()? {
            0 => None,
            code => self.reader.cstr().ok().map(|value| (code, value)),
        }
    }
}

/// A decoded server message, borrowing from the whole message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    Authentication(Authentication<'a>),
    /// Key of 4 bytes in protocol 3.0, 4 to 256 bytes in 3.2.
    BackendKeyData {
        process_id: u32,
        secret_key: &'a [u8],
    },
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    ReadyForQuery(TransactionStatus),
    ErrorResponse(ErrorFields<'a>),
    NoticeResponse(ErrorFields<'a>),
    CommandComplete {
        tag: &'a str,
    },
    NotificationResponse {
        process_id: u32,
        channel: &'a str,
        payload: &'a str,
    },
    /// Any other message; only its framing was checked.
    Other(BackendKind),
}

impl<'a> BackendMessage<'a> {
    /// Decodes one whole message (tag included), checking that the length
    /// field matches `msg` and that decoded bodies have no trailing bytes.
    pub fn decode(msg: &'a [u8]) -> Result<Self, ProtocolError> {
        let (tag, body) = parts(msg)?;
        let kind = BackendKind::from_tag(tag)?;
        let mut r = Reader::new(body);
        let message = match kind {
            BackendKind::Authentication => {
                BackendMessage::Authentication(Authentication::decode(&mut r)?)
            }
            BackendKind::BackendKeyData => decode_key_data(&mut r)?,
            BackendKind::ParameterStatus => BackendMessage::ParameterStatus {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            BackendKind::ReadyForQuery => {
                BackendMessage::ReadyForQuery(TransactionStatus::from_byte(r.u8()?)?)
            }
            BackendKind::ErrorResponse => {
                BackendMessage::ErrorResponse(ErrorFields::parse(r.rest())?)
            }
            BackendKind::NoticeResponse => {
                BackendMessage::NoticeResponse(ErrorFields::parse(r.rest())?)
            }
            BackendKind::CommandComplete => BackendMessage::CommandComplete { tag: r.cstr()? },
            BackendKind::NotificationResponse => BackendMessage::NotificationResponse {
                process_id: r.u32()?,
                channel: r.cstr()?,
                payload: r.cstr()?,
            },
            other => {
                r.rest();
                BackendMessage::Other(other)
            }
        };
        r.finish()?;
        Ok(message)
    }

    /// The kind of this message.
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendMessage::Authentication(_) => BackendKind::Authentication,
            BackendMessage::BackendKeyData { .. } => BackendKind::BackendKeyData,
            BackendMessage::ParameterStatus { .. } => BackendKind::ParameterStatus,
            BackendMessage::ReadyForQuery(_) => BackendKind::ReadyForQuery,
            BackendMessage::ErrorResponse(_) => BackendKind::ErrorResponse,
            BackendMessage::NoticeResponse(_) => BackendKind::NoticeResponse,
            BackendMessage::CommandComplete { .. } => BackendKind::CommandComplete,
            BackendMessage::NotificationResponse { .. } => BackendKind::NotificationResponse,
            BackendMessage::Other(kind) => *kind,
        }
    }
}

fn decode_key_data<'a>(r: &mut Reader<'a>) -> Result<BackendMessage<'a>, ProtocolError> {
    let process_id = r.u32()?;
    let secret_key = r.rest();
    if !(CANCEL_KEY_LEN_MIN..=CANCEL_KEY_LEN_MAX).contains(&secret_key.len()) {
        return Err(ProtocolError::Malformed("cancel key length out of range"));
    }
    Ok(BackendMessage::BackendKeyData {
        process_id,
        secret_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_values_golden() {
        let body = b"\x00\x03\x00\x00\x00\x02hi\xff\xff\xff\xff\x00\x00\x00\x00";
        let values = data_row_values(body).unwrap();
        assert_eq!(values, [Some(&b"hi"[..]), None, Some(&b""[..])]);
        assert!(data_row_values(b"\x00\x01\x00\x00\x00\x05ab").is_err());
        assert!(data_row_values(b"\x00\x00x").is_err(), "trailing bytes");
        assert!(data_row_values(b"\xff\xff").is_err(), "negative count");
    }

    fn decode(msg: &[u8]) -> Result<BackendMessage<'_>, ProtocolError> {
        BackendMessage::decode(msg)
    }

    #[test]
    fn kinds_round_trip_through_tags() {
        let mut known = 0;
        for tag in 0..=255u8 {
            if let Ok(kind) = BackendKind::from_tag(tag) {
                assert_eq!(kind.tag(), tag);
                known += 1;
            }
        }
        assert_eq!(known, 24);
        assert_eq!(
            BackendKind::from_tag(b'Q'),
            Err(ProtocolError::UnknownTag(b'Q'))
        );
    }

    #[test]
    fn transaction_status_bytes() {
        for status in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            assert_eq!(TransactionStatus::from_byte(status.byte()), Ok(status));
        }
        assert!(TransactionStatus::from_byte(b'X').is_err());
    }

    #[test]
    fn authentication_golden() {
        let auth = |msg| match decode(msg) {
            Ok(BackendMessage::Authentication(a)) => Ok(a),
            Ok(other) => panic!("not authentication: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(auth(b"R\0\0\0\x08\0\0\0\0"), Ok(Authentication::Ok));
        assert_eq!(
            auth(b"R\0\0\0\x08\0\0\0\x03"),
            Ok(Authentication::CleartextPassword)
        );
        assert_eq!(
            auth(b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04"),
            Ok(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        assert_eq!(
            auth(b"R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            Ok(Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            })
        );
        assert_eq!(
            auth(b"R\0\0\0\x0b\0\0\0\x0br=x"),
            Ok(Authentication::SaslContinue(b"r=x"))
        );
        assert_eq!(
            auth(b"R\0\0\0\x0b\0\0\0\x0cv=y"),
            Ok(Authentication::SaslFinal(b"v=y"))
        );
        assert_eq!(auth(b"R\0\0\0\x08\0\0\0\x07"), Ok(Authentication::Other(7)));
        // Ok with trailing bytes, short salt, SASL list without its final empty name.
        assert!(auth(b"R\0\0\0\x09\0\0\0\0\0").is_err());
        assert!(auth(b"R\0\0\0\x0b\0\0\0\x05\x01\x02\x03").is_err());
        assert!(auth(b"R\0\0\0\x0e\0\0\0\x0aSCRAM\0").is_err());
        assert!(auth(b"R\0\0\0\x06\0\0").is_err());
    }

    #[test]
    fn key_data_status_ready() {
        assert_eq!(
            decode(b"K\0\0\0\x0c\0\0\x30\x39\xde\xad\xbe\xef"),
            Ok(BackendMessage::BackendKeyData {
                process_id: 12345,
                secret_key: b"\xde\xad\xbe\xef"
            })
        );
        assert!(decode(b"K\0\0\0\x0b\0\0\x30\x39\xde\xad\xbe").is_err());
        assert_eq!(
            decode(b"S\0\0\0\x19client_encoding\0UTF8\0"),
            Ok(BackendMessage::ParameterStatus {
                name: "client_encoding",
                value: "UTF8"
            })
        );
        assert_eq!(
            decode(b"Z\0\0\0\x05T"),
            Ok(BackendMessage::ReadyForQuery(
                TransactionStatus::InTransaction
            ))
        );
        assert!(decode(b"Z\0\0\0\x05Q").is_err());
        assert!(decode(b"Z\0\0\0\x06IT").is_err());
    }

    #[test]
    fn error_response_golden() {
        let msg = b"E\0\0\0\x37SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0\0";
        let Ok(BackendMessage::ErrorResponse(fields)) = decode(msg) else {
            panic!("not an error response");
        };
        assert_eq!(fields.severity(), Some("ERROR"));
        assert_eq!(fields.code(), Some("42P01"));
        assert_eq!(fields.message(), Some("relation \"t\" does not exist"));
        assert_eq!(fields.hint(), None);
        let all: Vec<_> = fields.iter().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], (b'S', "ERROR"));
        // Missing final NUL, field without terminator, trailing bytes.
        assert!(decode(b"E\0\0\0\x0bSERROR\0").is_err());
        assert!(decode(b"E\0\0\0\x0aSERROR").is_err());
        assert!(decode(b"E\0\0\0\x0dSERROR\0\0\0").is_err());
        // Localized severity only (pre-9.6 servers).
        let Ok(BackendMessage::NoticeResponse(fields)) = decode(b"N\0\0\0\x0cSAVISO\0\0") else {
            panic!("not a notice");
        };
        assert_eq!(fields.severity(), Some("AVISO"));
        assert_eq!(fields.code(), None);
    }

    #[test]
    fn command_complete_and_notification() {
        assert_eq!(
            decode(b"C\0\0\0\x0dSELECT 1\0"),
            Ok(BackendMessage::CommandComplete { tag: "SELECT 1" })
        );
        assert_eq!(
            decode(b"A\0\0\0\x10\0\0\0\x07chan\0hi\0"),
            Ok(BackendMessage::NotificationResponse {
                process_id: 7,
                channel: "chan",
                payload: "hi"
            })
        );
        assert!(decode(b"A\0\0\0\x0d\0\0\0\x07chan\0").is_err());
    }

    #[test]
    fn other_kinds_are_not_decoded() {
        assert_eq!(
            decode(b"1\0\0\0\x04"),
            Ok(BackendMessage::Other(BackendKind::ParseComplete))
        );
        assert_eq!(
            decode(b"D\0\0\0\x0a\0\x01\xff\xff\xff\xff"),
            Ok(BackendMessage::Other(BackendKind::DataRow))
        );
        assert!(decode(b"D\0\0\0\x0b\0\x01").is_err());
        assert_eq!(decode(b"p\0\0\0\x04"), Err(ProtocolError::UnknownTag(b'p')));
    }
}
