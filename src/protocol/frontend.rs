//! Messages a client sends after startup: kind lookup and on-demand decoding.
//!
//! Owns the frontend tag bytes and body layouts ("protocol-message-formats").
//! [`FrontendKind::from_tag`] is the cheap hot-path lookup; [`FrontendMessage::decode`]
//! validates every field and borrows strings from the message. Nothing here
//! decides what a message means for routing or pooling.

use super::error::ProtocolError;
use super::frame::parts;
use super::read::Reader;

/// Every tagged message type a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Sync,
    Flush,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    FunctionCall,
    Terminate,
    /// Tag `p`: PasswordMessage, SASLInitialResponse, SASLResponse and
    /// GSSResponse share it; only the authentication state tells them apart.
    Password,
}

impl FrontendKind {
    #[inline]
    pub fn from_tag(tag: u8) -> Result<Self, ProtocolError> {
        Ok(match tag {
            b'Q' => FrontendKind::Query,
            b'P' => FrontendKind::Parse,
            b'B' => FrontendKind::Bind,
            b'D' => FrontendKind::Describe,
            b'E' => FrontendKind::Execute,
            b'S' => FrontendKind::Sync,
            b'H' => FrontendKind::Flush,
            b'C' => FrontendKind::Close,
            b'd' => FrontendKind::CopyData,
            b'c' => FrontendKind::CopyDone,
            b'f' => FrontendKind::CopyFail,
            b'F' => FrontendKind::FunctionCall,
            b'X' => FrontendKind::Terminate,
            b'p' => FrontendKind::Password,
            other => return Err(ProtocolError::UnknownTag(other)),
        })
    }

    #[inline]
    pub fn tag(self) -> u8 {
        match self {
            FrontendKind::Query => b'Q',
            FrontendKind::Parse => b'P',
            FrontendKind::Bind => b'B',
            FrontendKind::Describe => b'D',
            FrontendKind::Execute => b'E',
            FrontendKind::Sync => b'S',
            FrontendKind::Flush => b'H',
            FrontendKind::Close => b'C',
            FrontendKind::CopyData => b'd',
            FrontendKind::CopyDone => b'c',
            FrontendKind::CopyFail => b'f',
            FrontendKind::FunctionCall => b'F',
            FrontendKind::Terminate => b'X',
            FrontendKind::Password => b'p',
        }
    }
}

/// What Describe and Close name: a prepared statement (`S`) or a portal (`P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescribeTarget {
    Statement,
    Portal,
}

impl DescribeTarget {
    #[inline]
    pub fn byte(self) -> u8 {
        match self {
            DescribeTarget::Statement => b'S',
            DescribeTarget::Portal => b'P',
        }
    }

    #[inline]
    pub fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        match byte {
            b'S' => Ok(DescribeTarget::Statement),
            b'P' => Ok(DescribeTarget::Portal),
            _ => Err(ProtocolError::Malformed(
                "describe/close target is not 'S' or 'P'",
            )),
        }
    }
}

/// A decoded client message, borrowing from the whole message bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    Query {
        sql: &'a str,
    },
    Parse {
        name: &'a str,
        sql: &'a str,
        param_types: Vec<u32>,
    },
    /// Only the names are returned; formats and values are validated but left
    /// in place, since the proxy forwards them untouched.
    Bind {
        portal: &'a str,
        statement: &'a str,
    },
    Describe {
        target: DescribeTarget,
        name: &'a str,
    },
    Execute {
        portal: &'a str,
        max_rows: i32,
    },
    Close {
        target: DescribeTarget,
        name: &'a str,
    },
    Sync,
    Flush,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail {
        message: &'a str,
    },
    /// The body, validated against the FunctionCall layout.
    FunctionCall(&'a [u8]),
    Terminate,
    /// The body; decode it with [`decode_password`] or [`decode_sasl_initial`]
    /// (or use it as SASLResponse data) depending on the authentication state.
    Password(&'a [u8]),
}

impl<'a> FrontendMessage<'a> {
    /// Decodes one whole message (tag included). Every field is checked,
    /// including that the length field matches `msg` and nothing trails the
    /// last field.
    pub fn decode(msg: &'a [u8]) -> Result<Self, ProtocolError> {
        let (tag, body) = parts(msg)?;
        let kind = FrontendKind::from_tag(tag)?;
        let mut r = Reader::new(body);
        let message = match kind {
            FrontendKind::Query => FrontendMessage::Query { sql: r.cstr()? },
            FrontendKind::Parse => decode_parse(&mut r)?,
            FrontendKind::Bind => decode_bind(&mut r)?,
            FrontendKind::Describe => {
                let target = DescribeTarget::from_byte(r.u8()?)?;
                FrontendMessage::Describe {
                    target,
                    name: r.cstr()?,
                }
            }
            FrontendKind::Execute => FrontendMessage::Execute {
                portal: r.cstr()?,
                max_rows: r.i32()?,
            },
            FrontendKind::Close => {
                let target = DescribeTarget::from_byte(r.u8()?)?;
                FrontendMessage::Close {
                    target,
                    name: r.cstr()?,
                }
            }
            FrontendKind::Sync => FrontendMessage::Sync,
            FrontendKind::Flush => FrontendMessage::Flush,
            FrontendKind::CopyData => FrontendMessage::CopyData(r.rest()),
            FrontendKind::CopyDone => FrontendMessage::CopyDone,
            FrontendKind::CopyFail => FrontendMessage::CopyFail { message: r.cstr()? },
            FrontendKind::FunctionCall => {
                skip_function_call(&mut r)?;
                FrontendMessage::FunctionCall(body)
            }
            FrontendKind::Terminate => FrontendMessage::Terminate,
            FrontendKind::Password => FrontendMessage::Password(r.rest()),
        };
        r.finish()?;
        Ok(message)
    }

    /// The kind of this message, for code that only needs to classify it.
    #[inline]
    pub fn kind(&self) -> FrontendKind {
        match self {
            FrontendMessage::Query { .. } => FrontendKind::Query,
            FrontendMessage::Parse { .. } => FrontendKind::Parse,
            FrontendMessage::Bind { .. } => FrontendKind::Bind,
            FrontendMessage::Describe { .. } => FrontendKind::Describe,
            FrontendMessage::Execute { .. } => FrontendKind::Execute,
            FrontendMessage::Close { .. } => FrontendKind::Close,
            FrontendMessage::Sync => FrontendKind::Sync,
            FrontendMessage::Flush => FrontendKind::Flush,
            FrontendMessage::CopyData(_) => FrontendKind::CopyData,
            FrontendMessage::CopyDone => FrontendKind::CopyDone,
            FrontendMessage::CopyFail { .. } => FrontendKind::CopyFail,
            FrontendMessage::FunctionCall(_) => FrontendKind::FunctionCall,
            FrontendMessage::Terminate => FrontendKind::Terminate,
            FrontendMessage::Password(_) => FrontendKind::Password,
        }
    }
}

/// Where the prepared-statement name sits in a Parse, Bind, Describe or Close
/// body, found without decoding the rest (the hot path asks this of every
/// extended-protocol message). `None` for other messages, for a Describe or
/// Close of a portal, and for a body too short to hold the name; the full
/// decoder reports those.
pub fn statement_name_span(kind: FrontendKind, body: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = match kind {
        FrontendKind::Parse => 0,
        // Bind: the portal name comes first.
        FrontendKind::Bind => body.iter().position(|b| *b == 0)? + 1,
        FrontendKind::Describe | FrontendKind::Close => {
            if *body.first()? != DescribeTarget::Statement.byte() {
                return None;
            }
            1
        }
        _ => return None,
    };
    let len = body.get(start..)?.iter().position(|b| *b == 0)?;
    Some(start..start + len)
}

fn decode_parse<'a>(r: &mut Reader<'a>) -> Result<FrontendMessage<'a>, ProtocolError> {
    let name = r.cstr()?;
    let sql = r.cstr()?;
    let count = r.count()?;
    // Only allocate once the body is known to hold `count` Int32s.
    let mut types = Reader::new(r.bytes(count.saturating_mul(4))?);
    let mut param_types = Vec::with_capacity(count);
    for _ in 0..count {
        param_types.push(types.u32()?);
    }
    Ok(FrontendMessage::Parse {
        name,
        sql,
        param_types,
    })
}

/// Bind: portal, statement, format codes, parameter values, result formats.
fn decode_bind<'a>(r: &mut Reader<'a>) -> Result<FrontendMessage<'a>, ProtocolError> {
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    skip_format_codes(r)?;
    skip_values(r)?;
    skip_format_codes(r)?;
    Ok(FrontendMessage::Bind { portal, statement })
}

/// FunctionCall: Int32 oid, format codes, arguments, Int16 result format.
fn skip_function_call(r: &mut Reader<'_>) -> Result<(), ProtocolError> {
    r.u32()?;
    skip_format_codes(r)?;
    skip_values(r)?;
    r.i16()?;
    Ok(())
}

/// Int16 count, then that many Int16 format codes.
fn skip_format_codes(r: &mut Reader<'_>) -> Result<(), ProtocolError> {
    let count = r.count()?;
    r.bytes(count.saturating_mul(2))?;
    Ok(())
}

/// Int16 count, then that many (Int32 length or -1, bytes) values.
fn skip_values(r: &mut Reader<'_>) -> Result<(), ProtocolError> {
    for _ in 0..r.count()? {
        r.nullable_bytes()?;
    }
    Ok(())
}

/// SASLInitialResponse body: mechanism name, Int32 length (-1 for no data), data.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(&str, Option<&[u8]>), ProtocolError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr()?;
    let data = r.nullable_bytes()?;
    r.finish()?;
    Ok((mechanism, data))
}

/// PasswordMessage body: one NUL-terminated string (cleartext or `md5...`).
pub fn decode_password(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = Reader::new(body);
    let password = r.cstr()?;
    r.finish()?;
    Ok(password)
}

/// A Bind message with its parameters, for the code that must read or
/// rebuild them (routing by a bound sharding key, fan-out to shards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindParts<'a> {
    pub portal: &'a str,
    pub statement: &'a str,
    /// Parameter format codes as sent: none (all text), one (all), or one
    /// per parameter.
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<&'a [u8]>>,
    pub result_formats: Vec<i16>,
}

impl<'a> BindParts<'a> {
    /// Decodes one whole Bind message (tag included).
    pub fn decode(msg: &'a [u8]) -> Result<Self, ProtocolError> {
        let (tag, body) = parts(msg)?;
        if FrontendKind::from_tag(tag)? != FrontendKind::Bind {
            return Err(ProtocolError::Malformed("expected a Bind message"));
        }
        let mut r = Reader::new(body);
        let portal = r.cstr()?;
        let statement = r.cstr()?;
        let param_formats = (0..r.count()?).map(|_| r.i16()).collect::<Result<_, _>>()?;
        let params = (0..r.count()?)
            .map(|_| r.nullable_bytes())
            .collect::<Result<_, _>>()?;
        let result_formats = (0..r.count()?).map(|_| r.i16()).collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(BindParts {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format code of parameter `n` ("protocol-message-formats", Bind).
    pub fn param_format(&self, n: usize) -> i16 {
        format_code(&self.param_formats, n)
    }
}

/// The format code of value `n` under Bind's rule for format codes: none
/// means all text (0), one applies to all, otherwise one per value.
pub fn format_code(codes: &[i16], n: usize) -> i16 {
    match codes {
        [] => 0,
        [only] => *only,
        many => many.get(n).copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(msg: &[u8]) -> Result<FrontendMessage<'_>, ProtocolError> {
        FrontendMessage::decode(msg)
    }

    #[test]
    fn kinds_round_trip_through_tags() {
        for tag in 0..=255u8 {
            if let Ok(kind) = FrontendKind::from_tag(tag) {
                assert_eq!(kind.tag(), tag);
            }
        }
        assert_eq!(
            FrontendKind::from_tag(b'Z'),
            Err(ProtocolError::UnknownTag(b'Z'))
        );
    }

    #[test]
    fn query_golden() {
        assert_eq!(
            decode(b"Q\0\0\0\x0dselect 1\0"),
            Ok(FrontendMessage::Query { sql: "select 1" })
        );
        assert!(decode(b"Q\0\0\0\x0dselect 1x").is_err());
        assert!(decode(b"Q\0\0\0\x0eselect 1\0\0").is_err());
        assert!(decode(b"Q\0\0\0\x0cselect 1\0").is_err());
        assert_eq!(decode(b"Q\0\0\0\x06\xc3\0"), Err(ProtocolError::NotUtf8));
    }

    #[test]
    fn parse_golden() {
        // "P" len, "s1\0", "select $1\0", Int16 1, Int32 23 (int4).
        let msg = b"P\0\0\0\x17s1\0select $1\0\0\x01\0\0\0\x17";
        assert_eq!(
            decode(msg),
            Ok(FrontendMessage::Parse {
                name: "s1",
                sql: "select $1",
                param_types: vec![23]
            })
        );
        // Count says 2 but only one oid follows; negative count.
        assert!(decode(b"P\0\0\0\x17s1\0select $1\0\0\x02\0\0\0\x17").is_err());
        assert!(decode(b"P\0\0\0\x08\0\0\xff\xff").is_err());
        assert!(decode(b"P\0\0\0\x08\0\0\x7f\xff").is_err());
    }

    #[test]
    fn bind_golden() {
        // Unnamed portal, statement "s1", 1 format (text), 2 params ('42', NULL), 0 result formats.
        let msg = b"B\0\0\0\x1a\0s1\0\0\x01\0\0\0\x02\0\0\0\x0242\xff\xff\xff\xff\0\0";
        assert_eq!(
            decode(msg),
            Ok(FrontendMessage::Bind {
                portal: "",
                statement: "s1"
            })
        );
        // A value length running past the end, and a length below -1.
        assert!(decode(b"B\0\0\0\x14\0s1\0\0\0\0\x01\0\0\0\x09ab\0\0").is_err());
        assert!(decode(b"B\0\0\0\x12\0s1\0\0\0\0\x01\xff\xff\xff\xfe\0\0").is_err());
    }

    #[test]
    fn describe_execute_close_golden() {
        assert_eq!(
            decode(b"D\0\0\0\x08Ss1\0"),
            Ok(FrontendMessage::Describe {
                target: DescribeTarget::Statement,
                name: "s1"
            })
        );
        assert_eq!(
            decode(b"C\0\0\0\x06P\0"),
            Ok(FrontendMessage::Close {
                target: DescribeTarget::Portal,
                name: ""
            })
        );
        assert!(decode(b"D\0\0\0\x06X\0").is_err());
        assert_eq!(
            decode(b"E\0\0\0\x09\0\0\0\0\x0a"),
            Ok(FrontendMessage::Execute {
                portal: "",
                max_rows: 10
            })
        );
        assert!(decode(b"E\0\0\0\x08\0\0\0\0").is_err());
    }

    #[test]
    fn bodyless_messages() {
        assert_eq!(decode(b"S\0\0\0\x04"), Ok(FrontendMessage::Sync));
        assert_eq!(decode(b"H\0\0\0\x04"), Ok(FrontendMessage::Flush));
        assert_eq!(decode(b"c\0\0\0\x04"), Ok(FrontendMessage::CopyDone));
        assert_eq!(decode(b"X\0\0\0\x04"), Ok(FrontendMessage::Terminate));
        assert!(decode(b"S\0\0\0\x05\0").is_err());
    }

    #[test]
    fn copy_and_function_call() {
        assert_eq!(
            decode(b"d\0\0\0\x071\t2"),
            Ok(FrontendMessage::CopyData(b"1\t2"))
        );
        assert_eq!(
            decode(b"f\0\0\0\x08bad\0"),
            Ok(FrontendMessage::CopyFail { message: "bad" })
        );
        // oid 1, no formats, 1 argument of 1 byte, result format 0.
        let body = b"\0\0\0\x01\0\0\0\x01\0\0\0\x01x\0\0";
        let mut msg = b"F\0\0\0\x13".to_vec();
        msg.extend_from_slice(body);
        assert_eq!(decode(&msg), Ok(FrontendMessage::FunctionCall(body)));
        assert!(decode(b"F\0\0\0\x08\0\0\0\x01").is_err());
    }

    #[test]
    fn password_family() {
        let msg = b"p\0\0\0\x0bsecret\0";
        assert_eq!(decode(msg), Ok(FrontendMessage::Password(b"secret\0")));
        assert_eq!(decode_password(b"secret\0"), Ok("secret"));
        assert!(decode_password(b"secret").is_err());
        assert!(decode_password(b"a\0b\0").is_err());
        let body = b"SCRAM-SHA-256\0\0\0\0\x03n,,";
        assert_eq!(
            decode_sasl_initial(body),
            Ok(("SCRAM-SHA-256", Some(&b"n,,"[..])))
        );
        assert_eq!(decode_sasl_initial(b"X\0\xff\xff\xff\xff"), Ok(("X", None)));
        assert!(decode_sasl_initial(b"X\0\0\0\0\x04n,,").is_err());
        assert!(decode_sasl_initial(b"X\0\0\0\0\x02n,,").is_err());
    }

    #[test]
    fn unknown_tag_and_short_messages() {
        assert_eq!(decode(b"!\0\0\0\x04"), Err(ProtocolError::UnknownTag(b'!')));
        assert!(decode(b"").is_err());
        assert!(decode(b"Q\0\0").is_err());
        assert!(decode(b"Q\0\0\0\x04").is_err());
    }
}
