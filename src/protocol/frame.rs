//! Framing of tagged messages: find where one message ends without decoding it.
//!
//! Every message after startup is a 1-byte tag, an Int32 length that counts
//! itself but not the tag, and a body ("protocol-overview", "Messaging
//! Overview"). This file owns length checks and buffer reservation; it must not
//! look at tags or bodies, so forwarding stays a memcpy.

use bytes::{Bytes, BytesMut};

use super::error::ProtocolError;

/// Bytes before a tagged message's body: tag and Int32 length.
pub const HEADER_LEN: usize = 5;

/// The fixed front of a tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Whole message length: the tag byte plus the length field's value.
    pub total_len: usize,
}

impl Header {
    /// Bytes after the 5-byte header.
    #[inline]
    pub fn body_len(&self) -> usize {
        self.total_len.saturating_sub(HEADER_LEN)
    }
}

/// Reads the header at the front of `buf`.
///
/// `Ok(None)` when fewer than 5 bytes are available. Errors when the length
/// field is below 4 or the whole message would exceed `max_len`. The body
/// need not be present.
#[inline]
pub fn header(buf: &[u8], max_len: usize) -> Result<Option<Header>, ProtocolError> {
    let Some(&[tag, a, b, c, d]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    let body_and_len =
        usize::try_from(len)
            .ok()
            .filter(|&n| n >= 4)
            .ok_or(ProtocolError::BadLength {
                len: i64::from(len),
            })?;
    let total_len = body_and_len.saturating_add(1);
    if total_len > max_len {
        return Err(ProtocolError::TooLong {
            len: total_len,
            max: max_len,
        });
    }
    Ok(Some(Header { tag, total_len }))
}

/// The complete messages of `buf` (a batch already checked whole), each
/// with its header, up to the first incomplete or malformed one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let head = header(rest, usize::MAX).ok()??;
        let message = rest.get(..head.total_len)?;
        rest = &rest[head.total_len..];
        Some(message)
    })
}

/// Splits one complete message, tag included, off the front of `buf`.
///
/// `Ok(None)` when the message is incomplete; `buf` then has room reserved for
/// exactly what the header says is missing (never beyond `max_len`, because
/// the header was checked first), so the next read can fill it.
#[inline]
pub fn split(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, ProtocolError> {
    let Some(head) = header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < head.total_len {
        buf.reserve(head.total_len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(head.total_len).freeze()))
}

/// Checks that `msg` is exactly one whole tagged message and returns its tag
/// and body. The decoders use this so a length field that disagrees with the
/// slice is `Malformed`.
#[inline]
pub fn parts(msg: &[u8]) -> Result<(u8, &[u8]), ProtocolError> {
    let Some(&[tag, a, b, c, d]) = msg.get(..HEADER_LEN) else {
        return Err(ProtocolError::Malformed("message shorter than its header"));
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    if usize::try_from(len).ok() != Some(msg.len() - 1) {
        return Err(ProtocolError::Malformed(
            "length field disagrees with message size",
        ));
    }
    Ok((tag, &msg[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_walks_whole_messages_only() {
        let batch = [b'Q', 0, 0, 0, 5, b';', b'S', 0, 0, 0, 4, b'X', 0, 0];
        let found: Vec<&[u8]> = messages(&batch).collect();
        assert_eq!(found, [&batch[..6], &batch[6..11]]);
        // A malformed length ends the walk.
        assert_eq!(messages(&[b'Q', 0, 0, 0, 2, 0]).count(), 0);
    }

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(header(b"", 100), Ok(None));
        assert_eq!(header(b"Q\0\0\0", 100), Ok(None));
        let h = header(b"Q\0\0\0\x0d", 100).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                tag: b'Q',
                total_len: 14
            }
        );
        assert_eq!(h.body_len(), 9);
    }

    #[test]
    fn header_refuses_bad_lengths() {
        assert_eq!(
            header(b"Q\0\0\0\x03", 100),
            Err(ProtocolError::BadLength { len: 3 })
        );
        assert_eq!(
            header(b"Q\xff\xff\xff\xff", 100),
            Err(ProtocolError::BadLength { len: -1 })
        );
        assert_eq!(
            header(b"Q\0\0\0\x64", 100),
            Err(ProtocolError::TooLong { len: 101, max: 100 })
        );
        assert!(header(b"Q\0\0\0\x63", 100).unwrap().is_some());
        // The smallest legal message: a body-less Sync.
        assert_eq!(header(b"S\0\0\0\x04", 5).unwrap().unwrap().total_len, 5);
    }

    #[test]
    fn split_whole_messages() {
        let mut buf = BytesMut::from(&b"S\0\0\0\x04Q\0\0\0\x05\0Z"[..]);
        assert_eq!(&split(&mut buf, 100).unwrap().unwrap()[..], b"S\0\0\0\x04");
        assert_eq!(
            &split(&mut buf, 100).unwrap().unwrap()[..],
            b"Q\0\0\0\x05\0"
        );
        assert_eq!(split(&mut buf, 100), Ok(None));
        assert_eq!(&buf[..], b"Z");
    }

    #[test]
    fn split_partial_reserves_what_is_missing() {
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(b"d\0\0\x10\x04");
        assert_eq!(split(&mut buf, DEFAULT_MAX).unwrap(), None);
        assert!(buf.capacity() >= 4101);
        assert_eq!(buf.len(), 5);
        buf.extend_from_slice(&[7u8; 4096]);
        assert_eq!(split(&mut buf, DEFAULT_MAX).unwrap().unwrap().len(), 4101);
        assert!(buf.is_empty());
    }

    const DEFAULT_MAX: usize = crate::protocol::DEFAULT_MAX_MESSAGE_LEN;

    #[test]
    fn split_every_prefix_is_incomplete() {
        let full = b"Q\0\0\0\x0dselect 1\0";
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(split(&mut buf, DEFAULT_MAX), Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &full[..cut]);
        }
        let mut buf = BytesMut::from(&full[..]);
        assert_eq!(&split(&mut buf, DEFAULT_MAX).unwrap().unwrap()[..], full);
    }

    #[test]
    fn split_refuses_huge_header_before_reserving() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(b"d\x40\0\0\0"); // claims 1 GB
        assert_eq!(
            split(&mut buf, DEFAULT_MAX),
            Err(ProtocolError::TooLong {
                len: 0x4000_0001,
                max: DEFAULT_MAX
            })
        );
        assert!(buf.capacity() <= 64, "capacity grew to {}", buf.capacity());
        let mut buf = BytesMut::from(&b"d\0\0\0\x02"[..]);
        assert_eq!(
            split(&mut buf, DEFAULT_MAX),
            Err(ProtocolError::BadLength { len: 2 })
        );
    }

    #[test]
    fn parts_checks_length_against_slice() {
        assert_eq!(parts(b"Q\0\0\0\x05\0"), Ok((b'Q', &b"\0"[..])));
        assert!(parts(b"Q\0\0\0\x06\0").is_err());
        assert!(parts(b"Q\0\0\0\x04\0").is_err());
        assert!(parts(b"Q\0\0").is_err());
        assert!(parts(b"Q\xff\xff\xff\xff").is_err());
    }
}
