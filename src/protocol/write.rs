//! Builders that append one encoded message to a `BytesMut`.
//!
//! Owns encoding of the messages the proxy originates: its own errors and
//! notices, the authentication exchange with clients and servers, session
//! status, and small text result sets for admin commands
//! ("protocol-message-formats"). Each builder computes the length first,
//! reserves once and writes straight into `out`; none allocates elsewhere.
//!
//! Strings are written up to their first NUL, which the format cannot carry
//! inside a String field. Builders panic only if one message would exceed
//! 2 GiB, which proxy-made messages never approach.

use bytes::{BufMut, BytesMut};

use super::backend::{BackendKind, TransactionStatus};
use super::frontend::{DescribeTarget, FrontendKind};

/// Severity of a proxy-made ErrorResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Ends the current command; the session continues.
    Error,
    /// Ends the session; the connection is closed after sending.
    Fatal,
}

impl Severity {
    /// The non-localized spelling, written to both the `S` and `V` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// Type oid of `text` (pg_type.dat), used for every proxy-made column.
const TEXT_OID: i32 = 25;
/// Fixed bytes per RowDescription field after the name: table oid, column
/// number, type oid, type size, type modifier, format code.
const FIELD_FIXED_LEN: usize = 4 + 2 + 4 + 2 + 4 + 2;

/// ErrorResponse with severity, SQLSTATE, message and an optional hint
/// ("protocol-error-fields").
pub fn error_response(
    out: &mut BytesMut,
    severity: Severity,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
) {
    let hint_len = hint.map_or(0, |h| 1 + cstr_len(h));
    let severity = severity.as_str();
    let body_len = fields_len(severity, sqlstate, message) + hint_len + 1;
    put_message(out, BackendKind::ErrorResponse.tag(), body_len, |out| {
        put_fields(out, severity, sqlstate, message);
        if let Some(hint) = hint {
            out.put_u8(b'H');
            put_cstr(out, hint);
        }
        out.put_u8(0);
    });
}

/// NoticeResponse with severity NOTICE, SQLSTATE and message.
pub fn notice_response(out: &mut BytesMut, sqlstate: &str, message: &str) {
    let severity = "NOTICE";
    let body_len = fields_len(severity, sqlstate, message) + 1;
    put_message(out, BackendKind::NoticeResponse.tag(), body_len, |out| {
        put_fields(out, severity, sqlstate, message);
        out.put_u8(0);
    });
}

fn fields_len(severity: &str, sqlstate: &str, message: &str) -> usize {
    2 * (1 + cstr_len(severity)) + 1 + cstr_len(sqlstate) + 1 + cstr_len(message)
}

fn put_fields(out: &mut BytesMut, severity: &str, sqlstate: &str, message: &str) {
    for (code, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', message),
    ] {
        out.put_u8(code);
        put_cstr(out, value);
    }
}

/// AuthenticationOk.
pub fn authentication_ok(out: &mut BytesMut) {
    authentication(out, 0, &[]);
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext(out: &mut BytesMut) {
    authentication(out, 3, &[]);
}

/// AuthenticationMD5Password with its 4-byte salt.
pub fn authentication_md5(out: &mut BytesMut, salt: [u8; 4]) {
    authentication(out, 5, &salt);
}

/// AuthenticationSASL listing mechanisms, ended by an empty name.
pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    let body_len = 4 + mechanisms.iter().map(|m| cstr_len(m)).sum::<usize>() + 1;
    put_message(out, BackendKind::Authentication.tag(), body_len, |out| {
        out.put_i32(10);
        for mechanism in mechanisms {
            put_cstr(out, mechanism);
        }
        out.put_u8(0);
    });
}

/// AuthenticationSASLContinue carrying a server-first or similar message.
pub fn authentication_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    authentication(out, 11, data);
}

/// AuthenticationSASLFinal carrying the server-final message.
pub fn authentication_sasl_final(out: &mut BytesMut, data: &[u8]) {
    authentication(out, 12, data);
}

fn authentication(out: &mut BytesMut, code: i32, data: &[u8]) {
    put_message(
        out,
        BackendKind::Authentication.tag(),
        4 + data.len(),
        |out| {
            out.put_i32(code);
            out.put_slice(data);
        },
    );
}

/// ParameterStatus reporting one run-time parameter.
pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let body_len = cstr_len(name) + cstr_len(value);
    put_message(out, BackendKind::ParameterStatus.tag(), body_len, |out| {
        put_cstr(out, name);
        put_cstr(out, value);
    });
}

/// BackendKeyData; the key is 4 bytes for protocol 3.0 clients.
pub fn backend_key_data(out: &mut BytesMut, process_id: u32, secret_key: &[u8]) {
    put_message(
        out,
        BackendKind::BackendKeyData.tag(),
        4 + secret_key.len(),
        |out| {
            out.put_u32(process_id);
            out.put_slice(secret_key);
        },
    );
}

/// ReadyForQuery with the transaction status.
pub fn ready_for_query(out: &mut BytesMut, status: TransactionStatus) {
    put_message(out, BackendKind::ReadyForQuery.tag(), 1, |out| {
        out.put_u8(status.byte())
    });
}

/// NegotiateProtocolVersion: the newest minor version supported and the
/// `_pq_.*` options not recognized.
pub fn negotiate_protocol_version(out: &mut BytesMut, newest_minor: u32, unrecognized: &[&str]) {
    let body_len = 8 + unrecognized.iter().map(|o| cstr_len(o)).sum::<usize>();
    let count =
        u32::try_from(unrecognized.len()).expect("option list comes from one startup packet");
    put_message(
        out,
        BackendKind::NegotiateProtocolVersion.tag(),
        body_len,
        |out| {
            out.put_u32(newest_minor);
            out.put_u32(count);
            for option in unrecognized {
                put_cstr(out, option);
            }
        },
    );
}

/// CommandComplete with its command tag (`SELECT 1`, `SET`...).
pub fn command_complete(out: &mut BytesMut, tag: &str) {
    put_message(
        out,
        BackendKind::CommandComplete.tag(),
        cstr_len(tag),
        |out| put_cstr(out, tag),
    );
}

/// EmptyQueryResponse, the answer to an empty query string.
pub fn empty_query_response(out: &mut BytesMut) {
    put_message(out, BackendKind::EmptyQueryResponse.tag(), 0, |_| {});
}

/// ParseComplete.
pub fn parse_complete(out: &mut BytesMut) {
    put_message(out, BackendKind::ParseComplete.tag(), 0, |_| {});
}

/// BindComplete.
pub fn bind_complete(out: &mut BytesMut) {
    put_message(out, BackendKind::BindComplete.tag(), 0, |_| {});
}

/// NoData.
pub fn no_data(out: &mut BytesMut) {
    put_message(out, BackendKind::NoData.tag(), 0, |_| {});
}

/// CloseComplete.
pub fn close_complete(out: &mut BytesMut) {
    put_message(out, BackendKind::CloseComplete.tag(), 0, |_| {});
}

/// CopyFail with the reason (frontend): ends COPY FROM STDIN with an error.
pub fn copy_fail(out: &mut BytesMut, reason: &str) {
    put_message(out, FrontendKind::CopyFail.tag(), cstr_len(reason), |out| {
        put_cstr(out, reason)
    });
}

/// Close of the named prepared statement (frontend).
pub fn close_statement(out: &mut BytesMut, name: &str) {
    put_message(out, FrontendKind::Close.tag(), 1 + cstr_len(name), |out| {
        out.put_u8(DescribeTarget::Statement.byte());
        put_cstr(out, name);
    });
}

/// Parse of the unnamed statement, no parameter types given (frontend).
pub fn parse_unnamed(out: &mut BytesMut, sql: &str) {
    put_message(
        out,
        FrontendKind::Parse.tag(),
        1 + cstr_len(sql) + 2,
        |out| {
            put_cstr(out, "");
            put_cstr(out, sql);
            out.put_u16(0);
        },
    );
}

/// Bind of the unnamed portal to the unnamed statement: no parameters, no
/// result formats (text).
pub fn bind_unnamed(out: &mut BytesMut) {
    put_message(out, FrontendKind::Bind.tag(), 1 + 1 + 2 + 2 + 2, |out| {
        put_cstr(out, "");
        put_cstr(out, "");
        out.put_u16(0);
        out.put_u16(0);
        out.put_u16(0);
    });
}

/// Execute of the unnamed portal, every row.
pub fn execute_unnamed(out: &mut BytesMut) {
    put_message(out, FrontendKind::Execute.tag(), 1 + 4, |out| {
        put_cstr(out, "");
        out.put_u32(0);
    });
}

/// Query (simple protocol).
pub fn query(out: &mut BytesMut, sql: &str) {
    put_message(out, FrontendKind::Query.tag(), cstr_len(sql), |out| {
        put_cstr(out, sql)
    });
}

/// Sync.
pub fn sync(out: &mut BytesMut) {
    put_message(out, FrontendKind::Sync.tag(), 0, |_| {});
}

/// Flush.
pub fn flush(out: &mut BytesMut) {
    put_message(out, FrontendKind::Flush.tag(), 0, |_| {});
}

/// Terminate.
pub fn terminate(out: &mut BytesMut) {
    put_message(out, FrontendKind::Terminate.tag(), 0, |_| {});
}

/// PasswordMessage: cleartext or `md5`-prefixed hash.
pub fn password_message(out: &mut BytesMut, password: &str) {
    put_message(
        out,
        FrontendKind::Password.tag(),
        cstr_len(password),
        |out| {
            put_cstr(out, password);
        },
    );
}

/// SASLInitialResponse: mechanism name, Int32 length, client-first data.
pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let body_len = cstr_len(mechanism) + 4 + data.len();
    let data_len = i32::try_from(data.len()).expect("SASL messages are small");
    put_message(out, FrontendKind::Password.tag(), body_len, |out| {
        put_cstr(out, mechanism);
        out.put_i32(data_len);
        out.put_slice(data);
    });
}

/// SASLResponse: the client-final (or later) data, nothing else.
pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    put_message(out, FrontendKind::Password.tag(), data.len(), |out| {
        out.put_slice(data)
    });
}

/// RowDescription of text columns (type oid 25, text format), for result
/// sets the proxy makes itself.
pub fn row_description_text(out: &mut BytesMut, columns: &[&str]) {
    let count = count_i16(columns.len());
    let body_len = 2 + columns
        .iter()
        .map(|c| cstr_len(c) + FIELD_FIXED_LEN)
        .sum::<usize>();
    put_message(out, BackendKind::RowDescription.tag(), body_len, |out| {
        out.put_i16(count);
        for column in columns {
            put_cstr(out, column);
            out.put_i32(0); // not a table column
            out.put_i16(0); // no attribute number
            out.put_i32(TEXT_OID);
            out.put_i16(-1); // variable-length type
            out.put_i32(-1); // no type modifier
            out.put_i16(0); // text format
        }
    });
}

/// DataRow of text values; `None` is SQL NULL (length -1).
pub fn data_row_text(out: &mut BytesMut, values: &[Option<&str>]) {
    let count = count_i16(values.len());
    let body_len = 2 + values
        .iter()
        .map(|v| 4 + v.map_or(0, str::len))
        .sum::<usize>();
    put_message(out, BackendKind::DataRow.tag(), body_len, |out| {
        out.put_i16(count);
        for value in values {
            match value {
                Some(value) => {
                    out.put_i32(len_i32(value.len()));
                    out.put_slice(value.as_bytes());
                }
                None => out.put_i32(-1),
            }
        }
    });
}

/// A whole message of `tag` whose body is already encoded (a server's
/// message passed on, a DataRow kept by a merge).
#[inline]
pub fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    put_message(out, tag, body.len(), |out| out.put_slice(body));
}

/// Writes tag and length, then the body via `body`, which must write exactly
/// `body_len` bytes (checked in debug builds).
#[inline]
pub(crate) fn put_message(
    out: &mut BytesMut,
    tag: u8,
    body_len: usize,
    body: impl FnOnce(&mut BytesMut),
) {
    let len = body_len.saturating_add(4);
    out.reserve(1 + len);
    let start = out.len();
    out.put_u8(tag);
    out.put_i32(len_i32(len));
    body(out);
    debug_assert_eq!(
        out.len() - start,
        1 + len,
        "body length miscounted for tag {tag}"
    );
}

#[inline]
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).expect("proxy-made messages stay far below 2 GiB")
}

fn count_i16(count: usize) -> i16 {
    i16::try_from(count).expect("proxy-made result sets have few columns")
}

/// The wire length of `s` as a String field: up to its first NUL, plus one.
#[inline]
pub(crate) fn cstr_len(s: &str) -> usize {
    until_nul(s).len() + 1
}

/// Writes `s` up to its first NUL, then a NUL. Cutting is the only safe
/// choice: an embedded NUL would end the field early and desynchronize the
/// peer's parser.
#[inline]
pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(until_nul(s));
    out.put_u8(0);
}

#[inline]
fn until_nul(s: &str) -> &[u8] {
    let bytes = s.as_bytes();
    match bytes.iter().position(|&b| b == 0) {
        Some(nul) => &bytes[..nul],
        None => bytes,
    }
}

/// Parse of the unnamed statement with parameter types (0 = unspecified).
pub fn parse_typed(out: &mut BytesMut, sql: &str, param_types: &[u32]) {
    put_message(
        out,
        FrontendKind::Parse.tag(),
        1 + cstr_len(sql) + 2 + 4 * param_types.len(),
        |out| {
            put_cstr(out, "");
            put_cstr(out, sql);
            out.put_u16(param_types.len() as u16);
            for &oid in param_types {
                out.put_u32(oid);
            }
        },
    );
}

/// Bind of the unnamed portal to the unnamed statement with the given
/// parameters and result format codes.
pub fn bind_values(
    out: &mut BytesMut,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    let values: usize = params.iter().map(|p| 4 + p.map_or(0, <[u8]>::len)).sum();
    let len = 1 + 1 + 2 + 2 * param_formats.len() + 2 + values + 2 + 2 * result_formats.len();
    put_message(out, FrontendKind::Bind.tag(), len, |out| {
        put_cstr(out, "");
        put_cstr(out, "");
        out.put_u16(param_formats.len() as u16);
        for &format in param_formats {
            out.put_i16(format);
        }
        out.put_u16(params.len() as u16);
        for param in params {
            match param {
                Some(value) => {
                    out.put_i32(value.len() as i32);
                    out.put_slice(value);
                }
                None => out.put_i32(-1),
            }
        }
        out.put_u16(result_formats.len() as u16);
        for &format in result_formats {
            out.put_i16(format);
        }
    });
}

/// Describe of the unnamed portal (`portal`) or unnamed statement.
pub fn describe_unnamed(out: &mut BytesMut, portal: bool) {
    put_message(out, FrontendKind::Describe.tag(), 1 + 1, |out| {
        out.put_u8(if portal { b'P' } else { b'S' });
        put_cstr(out, "");
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::{Authentication, BackendMessage};
    use crate::protocol::frontend::{decode_password, decode_sasl_initial, FrontendMessage};

    fn written(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut out = BytesMut::new();
        f(&mut out);
        out
    }

    #[test]
    fn error_response_golden_and_round_trip() {
        let out = written(|o| error_response(o, Severity::Fatal, "28P01", "bad password", None));
        let golden: &[u8] = b"E\0\0\0\x28SFATAL\0VFATAL\0C28P01\0Mbad password\0\0";
        assert_eq!(&out[..], golden);
        let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&out) else {
            panic!("not an error response");
        };
        assert_eq!(fields.severity(), Some("FATAL"));
        assert_eq!(fields.code(), Some("28P01"));
        assert_eq!(fields.message(), Some("bad password"));

        let out = written(|o| error_response(o, Severity::Error, "08P01", "m", Some("try")));
        assert_eq!(&out[..], b"E\0\0\0\x22SERROR\0VERROR\0C08P01\0Mm\0Htry\0\0");
        let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::decode(&out) else {
            panic!("not an error response");
        };
        assert_eq!(fields.hint(), Some("try"));
    }

    #[test]
    fn notice_response_golden() {
        let out = written(|o| notice_response(o, "00000", "hi"));
        assert_eq!(&out[..], b"N\0\0\0\x20SNOTICE\0VNOTICE\0C00000\0Mhi\0\0");
        assert!(matches!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::NoticeResponse(_))
        ));
    }

    #[test]
    fn authentication_golden_and_round_trip() {
        let cases: [(BytesMut, &[u8], Authentication<'_>); 6] = [
            (
                written(authentication_ok),
                b"R\0\0\0\x08\0\0\0\0",
                Authentication::Ok,
            ),
            (
                written(authentication_cleartext),
                b"R\0\0\0\x08\0\0\0\x03",
                Authentication::CleartextPassword,
            ),
            (
                written(|o| authentication_md5(o, *b"salt")),
                b"R\0\0\0\x0c\0\0\0\x05salt",
                Authentication::Md5Password { salt: *b"salt" },
            ),
            (
                written(|o| authentication_sasl(o, &["SCRAM-SHA-256"])),
                b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
                Authentication::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256"],
                },
            ),
            (
                written(|o| authentication_sasl_continue(o, b"r=ab")),
                b"R\0\0\0\x0c\0\0\0\x0br=ab",
                Authentication::SaslContinue(b"r=ab"),
            ),
            (
                written(|o| authentication_sasl_final(o, b"v=cd")),
                b"R\0\0\0\x0c\0\0\0\x0cv=cd",
                Authentication::SaslFinal(b"v=cd"),
            ),
        ];
        for (out, golden, decoded) in cases {
            assert_eq!(&out[..], golden);
            assert_eq!(
                BackendMessage::decode(&out),
                Ok(BackendMessage::Authentication(decoded))
            );
        }
    }

    #[test]
    fn session_status_golden() {
        let out = written(|o| parameter_status(o, "TimeZone", "UTC"));
        assert_eq!(&out[..], b"S\0\0\0\x11TimeZone\0UTC\0");
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::ParameterStatus {
                name: "TimeZone",
                value: "UTC"
            })
        );
        let out = written(|o| backend_key_data(o, 0x0102_0304, b"\xaa\xbb\xcc\xdd"));
        assert_eq!(&out[..], b"K\0\0\0\x0c\x01\x02\x03\x04\xaa\xbb\xcc\xdd");
        let key = [9u8; 32];
        let out = written(|o| backend_key_data(o, 1, &key));
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::BackendKeyData {
                process_id: 1,
                secret_key: &key
            })
        );
        let out = written(|o| ready_for_query(o, TransactionStatus::Failed));
        assert_eq!(&out[..], b"Z\0\0\0\x05E");
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::ReadyForQuery(TransactionStatus::Failed))
        );
    }

    #[test]
    fn negotiate_protocol_version_golden() {
        let out = written(|o| negotiate_protocol_version(o, 2, &["_pq_.x"]));
        assert_eq!(&out[..], b"v\0\0\0\x13\0\0\0\x02\0\0\0\x01_pq_.x\0");
        let out = written(|o| negotiate_protocol_version(o, 0, &[]));
        assert_eq!(&out[..], b"v\0\0\0\x0c\0\0\0\0\0\0\0\0");
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::Other(BackendKind::NegotiateProtocolVersion))
        );
    }

    #[test]
    fn command_complete_and_empty_query() {
        let out = written(|o| command_complete(o, "SHOW"));
        assert_eq!(&out[..], b"C\0\0\0\x09SHOW\0");
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::CommandComplete { tag: "SHOW" })
        );
        let out = written(empty_query_response);
        assert_eq!(&out[..], b"I\0\0\0\x04");
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::Other(BackendKind::EmptyQueryResponse))
        );
    }

    #[test]
    fn frontend_writers_golden_and_round_trip() {
        let out = written(|o| query(o, "select 1"));
        assert_eq!(&out[..], b"Q\0\0\0\x0dselect 1\0");
        assert_eq!(
            FrontendMessage::decode(&out),
            Ok(FrontendMessage::Query { sql: "select 1" })
        );
        assert_eq!(&written(sync)[..], b"S\0\0\0\x04");
        assert_eq!(&written(flush)[..], b"H\0\0\0\x04");
        assert_eq!(&written(terminate)[..], b"X\0\0\0\x04");
        assert_eq!(
            FrontendMessage::decode(&written(sync)),
            Ok(FrontendMessage::Sync)
        );
        assert_eq!(
            FrontendMessage::decode(&written(flush)),
            Ok(FrontendMessage::Flush)
        );
        assert_eq!(
            FrontendMessage::decode(&written(terminate)),
            Ok(FrontendMessage::Terminate)
        );

        let out = written(|o| password_message(o, "md5abc"));
        assert_eq!(&out[..], b"p\0\0\0\x0bmd5abc\0");
        let Ok(FrontendMessage::Password(body)) = FrontendMessage::decode(&out) else {
            panic!("not a password message");
        };
        assert_eq!(decode_password(body), Ok("md5abc"));

        let out = written(|o| sasl_initial_response(o, "SCRAM-SHA-256", b"n,,n=,r=x"));
        assert_eq!(&out[..], b"p\0\0\0\x1fSCRAM-SHA-256\0\0\0\0\x09n,,n=,r=x");
        let Ok(FrontendMessage::Password(body)) = FrontendMessage::decode(&out) else {
            panic!("not a password message");
        };
        assert_eq!(
            decode_sasl_initial(body),
            Ok(("SCRAM-SHA-256", Some(&b"n,,n=,r=x"[..])))
        );

        let out = written(|o| sasl_response(o, b"c=biws"));
        assert_eq!(&out[..], b"p\0\0\0\x0ac=biws");
        assert_eq!(
            FrontendMessage::decode(&out),
            Ok(FrontendMessage::Password(b"c=biws"))
        );
    }

    #[test]
    fn text_result_set_golden() {
        let out = written(|o| row_description_text(o, &["a"]));
        let golden: &[u8] = b"T\0\0\0\x1a\0\x01a\0\
\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0";
        assert_eq!(&out[..], golden);
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::Other(BackendKind::RowDescription))
        );
        let out = written(|o| data_row_text(o, &[Some("42"), None, Some("")]));
        assert_eq!(
            &out[..],
            b"D\0\0\0\x14\0\x03\0\0\0\x0242\xff\xff\xff\xff\0\0\0\0"
        );
        assert_eq!(
            BackendMessage::decode(&out),
            Ok(BackendMessage::Other(BackendKind::DataRow))
        );
        assert_eq!(
            &written(|o| row_description_text(o, &[]))[..],
            b"T\0\0\0\x06\0\0"
        );
    }

    #[test]
    fn writers_append_and_cut_nul() {
        let mut out = BytesMut::new();
        sync(&mut out);
        query(&mut out, "select 1\0; drop table t");
        assert_eq!(&out[..], b"S\0\0\0\x04Q\0\0\0\x0dselect 1\0");
        let out = written(|o| error_response(o, Severity::Error, "XX000", "a\0b", Some("c\0")));
        assert!(BackendMessage::decode(&out).is_ok());
    }
}
