//! Errors of the wire protocol codec.
//!
//! Owns the one error type every decoder returns. It must not carry
//! message contents (they may hold secrets); only shapes and sizes.

use std::fmt;

/// Why bytes could not be framed or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// The declared message length exceeds the limit; `len` is the whole
    /// message length in bytes, tag included.
    TooLong { len: usize, max: usize },
    /// The length field is smaller than the length field itself (or than the
    /// fixed part of an untagged startup packet).
    BadLength { len: i64 },
    /// A tag byte that does not name a message in this direction.
    UnknownTag(u8),
    /// The contents disagree with the message format or the declared length.
    Malformed(&'static str),
    /// A string field is not valid UTF-8.
    NotUtf8,
}

impl ProtocolError {
    /// The SQLSTATE to report to the peer: `54000` (program_limit_exceeded)
    /// for an oversize message, `08P01` (protocol_violation) otherwise
    /// ("errcodes-appendix").
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ProtocolError::TooLong { .. } => "54000",
            _ => "08P01",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::TooLong { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            ProtocolError::BadLength { len } => write!(f, "invalid message length {len}"),
            ProtocolError::UnknownTag(tag) => write!(f, "unknown message type 0x{tag:02x}"),
            ProtocolError::Malformed(what) => write!(f, "malformed message: {what}"),
            ProtocolError::NotUtf8 => f.write_str("string field is not valid UTF-8"),
        }
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        assert_eq!(
            ProtocolError::TooLong { len: 9, max: 8 }.sqlstate(),
            "54000"
        );
        assert_eq!(ProtocolError::BadLength { len: 3 }.sqlstate(), "08P01");
        assert_eq!(ProtocolError::UnknownTag(b'!').sqlstate(), "08P01");
        assert_eq!(ProtocolError::Malformed("x").sqlstate(), "08P01");
        assert_eq!(ProtocolError::NotUtf8.sqlstate(), "08P01");
    }

    #[test]
    fn display() {
        let e = ProtocolError::TooLong { len: 9, max: 8 };
        assert_eq!(
            e.to_string(),
            "message of 9 bytes exceeds the limit of 8 bytes"
        );
        assert_eq!(
            ProtocolError::UnknownTag(0x21).to_string(),
            "unknown message type 0x21"
        );
    }
}
