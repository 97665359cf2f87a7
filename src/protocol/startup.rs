//! Untagged packets a client sends before the tagged protocol starts.
//!
//! StartupMessage, SSLRequest, GSSENCRequest and CancelRequest share one
//! layout: Int32 length (counting itself), Int32 code, body
//! ("protocol-message-formats"). This file owns telling them apart and the
//! startup size limit; it must not decide what a parameter means or whether a
//! protocol minor version is acceptable (that is negotiation, in `session`).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::read::Reader;
use super::write::{cstr_len, put_cstr};

/// Postgres refuses startup packets above 10,000 bytes
/// (`MAX_STARTUP_PACKET_LENGTH`); so do we, whatever the message limit.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;
/// CancelRequest code: 1234 in the high 16 bits, 5678 in the low.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// SSLRequest code: 1234.5679.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// GSSENCRequest code: 1234.5680.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Cancel keys are 4 bytes in protocol 3.0 and 4 to 256 bytes since 3.2
/// ("protocol-message-formats", BackendKeyData).
pub const CANCEL_KEY_LEN_MIN: usize = 4;
pub const CANCEL_KEY_LEN_MAX: usize = 256;

/// Length and code fields of every startup packet.
const FIXED_LEN: usize = 8;

/// A protocol version as sent in StartupMessage: major in the high 16 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    pub const V3_0: ProtocolVersion = ProtocolVersion { major: 3, minor: 0 };
    /// Protocol 3.2 (PostgreSQL 18) brought longer cancel keys; 3.1 was never used.
    pub const V3_2: ProtocolVersion = ProtocolVersion { major: 3, minor: 2 };

    /// The Int32 code as it appears on the wire.
    #[inline]
    pub fn code(self) -> u32 {
        (u32::from(self.major) << 16) | u32::from(self.minor)
    }

    #[inline]
    pub fn from_code(code: u32) -> Self {
        // Truncation is the format: two 16-bit halves of one Int32.
        ProtocolVersion {
            major: (code >> 16) as u16,
            minor: code as u16,
        }
    }
}

/// One decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage. `params` keeps wire order and includes `user`,
    /// `database`, `options`, `replication` and `_pq_.*` protocol options.
    Startup {
        version: ProtocolVersion,
        params: Vec<(String, String)>,
    },
    SslRequest,
    GssEncRequest,
    /// CancelRequest; the key is 4 bytes in 3.0 and up to 256 bytes in 3.2.
    Cancel {
        process_id: u32,
        secret_key: Bytes,
    },
}

/// Splits and decodes one startup packet off the front of `buf`.
///
/// `Ok(None)` when incomplete, with room reserved for the missing part. The
/// limit is the smaller of `max_len` and [`MAX_STARTUP_PACKET_LEN`], checked
/// before anything is reserved.
pub fn split_startup(
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Option<StartupPacket>, ProtocolError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    let total_len = usize::try_from(len)
        .ok()
        .filter(|&n| n >= FIXED_LEN)
        .ok_or(ProtocolError::BadLength {
            len: i64::from(len),
        })?;
    let limit = max_len.min(MAX_STARTUP_PACKET_LEN);
    if total_len > limit {
        return Err(ProtocolError::TooLong {
            len: total_len,
            max: limit,
        });
    }
    if buf.len() < total_len {
        buf.reserve(total_len - buf.len());
        return Ok(None);
    }
    decode_startup(buf.split_to(total_len).freeze()).map(Some)
}

/// Decodes one whole startup packet, length field included.
pub fn decode_startup(packet: Bytes) -> Result<StartupPacket, ProtocolError> {
    let mut r = Reader::new(&packet);
    let len = r.i32()?;
    if usize::try_from(len).ok() != Some(packet.len()) {
        return Err(ProtocolError::Malformed(
            "length field disagrees with packet size",
        ));
    }
    let code = r.u32()?;
    match code {
        SSL_REQUEST_CODE => r.finish().map(|()| StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => r.finish().map(|()| StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let process_id = r.u32()?;
            let key_len = r.rest().len();
            if !(CANCEL_KEY_LEN_MIN..=CANCEL_KEY_LEN_MAX).contains(&key_len) {
                return Err(ProtocolError::Malformed("cancel key length out of range"));
            }
            let secret_key = packet.slice(packet.len() - key_len..);
            Ok(StartupPacket::Cancel {
                process_id,
                secret_key,
            })
        }
        _ => {
            let version = ProtocolVersion::from_code(code);
            if version.major != 3 {
                return Err(ProtocolError::Malformed(
                    "unsupported protocol major version",
                ));
            }
            let params = decode_params(&mut r)?;
            Ok(StartupPacket::Startup { version, params })
        }
    }
}

/// Name/value string pairs ended by one empty name; the terminator must be
/// the last byte, as Postgres insists.
fn decode_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            r.finish()?;
            return Ok(params);
        }
        let value = r.cstr()?;
        params.push((name.to_owned(), value.to_owned()));
    }
}

/// Appends a StartupMessage. Names and values are cut at an embedded NUL,
/// which the format cannot carry.
pub fn encode_startup(version: ProtocolVersion, params: &[(&str, &str)], out: &mut BytesMut) {
    let body_len: usize = params
        .iter()
        .map(|(name, value)| cstr_len(name) + cstr_len(value))
        .sum::<usize>()
        + 1;
    let len = FIXED_LEN + body_len;
    out.reserve(len);
    put_len(out, len);
    out.put_u32(version.code());
    for (name, value) in params {
        put_cstr(out, name);
        put_cstr(out, value);
    }
    out.put_u8(0);
}

/// Appends a CancelRequest. `secret_key` is sent as given: 4 bytes for a
/// 3.0 server, whatever BackendKeyData carried for 3.2.
pub fn encode_cancel(process_id: u32, secret_key: &[u8], out: &mut BytesMut) {
    let len = FIXED_LEN + 4 + secret_key.len();
    out.reserve(len);
    put_len(out, len);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_u32(process_id);
    out.put_slice(secret_key);
}

/// Appends an SSLRequest.
pub fn encode_ssl_request(out: &mut BytesMut) {
    out.reserve(FIXED_LEN);
    put_len(out, FIXED_LEN);
    out.put_u32(SSL_REQUEST_CODE);
}

fn put_len(out: &mut BytesMut, len: usize) {
    out.put_i32(i32::try_from(len).expect("startup packets are built from small inputs"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DEFAULT_MAX_MESSAGE_LEN as MAX;

    fn split_all(bytes: &[u8]) -> Result<Option<StartupPacket>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let packet = split_startup(&mut buf, MAX);
        if let Ok(Some(_)) = packet {
            assert!(buf.is_empty());
        }
        packet
    }

    #[test]
    fn startup_3_0_golden() {
        // Int32 length 48, Int32 196608 (3.0), name/value pairs, final NUL.
        let golden: &[u8] = b"\x00\x00\x00\x30\x00\x03\x00\x00\
user\0alice\0database\0db1\0options\0-c a=b\0\0";
        assert_eq!(golden.len(), 48);
        let mut out = BytesMut::new();
        encode_startup(
            ProtocolVersion::V3_0,
            &[
                ("user", "alice"),
                ("database", "db1"),
                ("options", "-c a=b"),
            ],
            &mut out,
        );
        assert_eq!(&out[..], golden);
        let packet = split_all(golden).unwrap().unwrap();
        assert_eq!(
            packet,
            StartupPacket::Startup {
                version: ProtocolVersion::V3_0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db1".into()),
                    ("options".into(), "-c a=b".into()),
                ],
            }
        );
    }

    #[test]
    fn startup_3_2_with_protocol_option() {
        let golden: &[u8] = b"\x00\x00\x00\x1f\x00\x03\x00\x02user\0bob\0_pq_.test\0on\0\0";
        assert_eq!(golden.len(), 0x1f);
        let mut out = BytesMut::new();
        encode_startup(
            ProtocolVersion::V3_2,
            &[("user", "bob"), ("_pq_.test", "on")],
            &mut out,
        );
        assert_eq!(&out[..], golden);
        let StartupPacket::Startup { version, params } = split_all(golden).unwrap().unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(version, ProtocolVersion { major: 3, minor: 2 });
        assert_eq!(params[1], ("_pq_.test".to_string(), "on".to_string()));
    }

    #[test]
    fn startup_refuses_bad_major_and_layout() {
        let bad_major = b"\x00\x00\x00\x09\x00\x02\x00\x00\0";
        assert!(matches!(
            split_all(bad_major),
            Err(ProtocolError::Malformed(_))
        ));
        // A 1234.5681 code is neither a known request nor protocol 3.
        let unknown = b"\x00\x00\x00\x08\x04\xd2\x16\x31";
        assert!(matches!(
            split_all(unknown),
            Err(ProtocolError::Malformed(_))
        ));
        // Missing final terminator; name without value; trailing garbage; not UTF-8.
        assert!(split_all(b"\x00\x00\x00\x08\x00\x03\x00\x00").is_err());
        assert!(split_all(b"\x00\x00\x00\x0d\x00\x03\x00\x00user\0").is_err());
        assert!(split_all(b"\x00\x00\x00\x0b\x00\x03\x00\x00\0xx").is_err());
        assert_eq!(
            split_all(b"\x00\x00\x00\x0d\x00\x03\x00\x00u\0\xff\0\0"),
            Err(ProtocolError::NotUtf8)
        );
        // No parameters at all is well formed (the session rejects a missing user).
        let empty = split_all(b"\x00\x00\x00\x09\x00\x03\x00\x00\0")
            .unwrap()
            .unwrap();
        assert!(matches!(empty, StartupPacket::Startup { params, .. } if params.is_empty()));
    }

    #[test]
    fn ssl_and_gssenc_requests() {
        let ssl: &[u8] = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";
        let mut out = BytesMut::new();
        encode_ssl_request(&mut out);
        assert_eq!(&out[..], ssl);
        assert_eq!(split_all(ssl), Ok(Some(StartupPacket::SslRequest)));
        let gss: &[u8] = b"\x00\x00\x00\x08\x04\xd2\x16\x30";
        assert_eq!(split_all(gss), Ok(Some(StartupPacket::GssEncRequest)));
        assert!(split_all(b"\x00\x00\x00\x09\x04\xd2\x16\x2f\0").is_err());
    }

    #[test]
    fn cancel_with_short_and_long_keys() {
        let short: &[u8] = b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x30\x39\xde\xad\xbe\xef";
        let mut out = BytesMut::new();
        encode_cancel(12345, &[0xde, 0xad, 0xbe, 0xef], &mut out);
        assert_eq!(&out[..], short);
        assert_eq!(
            split_all(short),
            Ok(Some(StartupPacket::Cancel {
                process_id: 12345,
                secret_key: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            }))
        );
        for key_len in [32usize, 256] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            let mut out = BytesMut::new();
            encode_cancel(7, &key, &mut out);
            assert_eq!(out.len(), 12 + key_len);
            let Some(StartupPacket::Cancel {
                process_id,
                secret_key,
            }) = split_all(&out).unwrap()
            else {
                panic!("not a cancel");
            };
            assert_eq!((process_id, &secret_key[..]), (7, &key[..]));
        }
        for key_len in [0usize, 3, 257] {
            let mut out = BytesMut::new();
            encode_cancel(7, &vec![1; key_len], &mut out);
            assert!(
                matches!(split_all(&out), Err(ProtocolError::Malformed(_))),
                "{key_len}"
            );
        }
    }

    #[test]
    fn startup_limits() {
        assert_eq!(
            split_all(b"\x00\x00\x00\x07\0\0\0"),
            Err(ProtocolError::BadLength { len: 7 })
        );
        assert_eq!(
            split_all(b"\xff\xff\xff\xf0"),
            Err(ProtocolError::BadLength { len: -16 })
        );
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(b"\x40\x00\x00\x00\x00\x03\x00\x00");
        assert_eq!(
            split_startup(&mut buf, MAX),
            Err(ProtocolError::TooLong {
                len: 0x4000_0000,
                max: MAX_STARTUP_PACKET_LEN
            })
        );
        assert!(buf.capacity() <= 64);
        // 10,000 bytes exactly is accepted, 10,001 refused; a smaller max_len wins.
        let mut buf = BytesMut::from(&b"\x00\x00\x27\x10\x00\x03\x00\x00"[..]);
        assert_eq!(split_startup(&mut buf, MAX), Ok(None));
        let mut buf = BytesMut::from(&b"\x00\x00\x27\x11\x00\x03\x00\x00"[..]);
        assert!(matches!(
            split_startup(&mut buf, MAX),
            Err(ProtocolError::TooLong { .. })
        ));
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x40"[..]);
        assert_eq!(
            split_startup(&mut buf, 32),
            Err(ProtocolError::TooLong { len: 64, max: 32 })
        );
    }

    #[test]
    fn startup_big_params_round_trip_at_limit() {
        // 8 fixed + "user\0" 5 + value + NUL + final NUL = 10,000.
        let value = "v".repeat(MAX_STARTUP_PACKET_LEN - 8 - 5 - 2);
        let mut out = BytesMut::new();
        encode_startup(ProtocolVersion::V3_0, &[("user", &value)], &mut out);
        assert_eq!(out.len(), MAX_STARTUP_PACKET_LEN);
        assert!(split_all(&out).unwrap().is_some());
    }

    #[test]
    fn startup_partial_input() {
        let mut full = BytesMut::new();
        encode_startup(ProtocolVersion::V3_0, &[("user", "u")], &mut full);
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(split_startup(&mut buf, MAX), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn writers_cut_strings_at_nul() {
        let mut out = BytesMut::new();
        encode_startup(ProtocolVersion::V3_0, &[("user", "a\0b")], &mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x10\x00\x03\x00\x00user\0a\0\0");
        assert!(split_all(&out).unwrap().is_some());
    }
}
