//! A bounds-checked cursor over a message body, shared by the decoders.
//!
//! Owns the primitive field formats of "protocol-message-types" (Int16,
//! Int32, String, Byte*n*). Every read checks the remaining length and reports
//! `Malformed` instead of slicing out of bounds; it must never panic.

use super::error::ProtocolError;

/// Reads big-endian fields front to back.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.rest.len() {
            return Err(ProtocolError::Malformed(
                "field runs past the end of the message",
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    #[inline]
    pub(crate) fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// An Int16 element count, which the formats never allow to be negative.
    #[inline]
    pub(crate) fn count(&mut self) -> Result<usize, ProtocolError> {
        usize::try_from(self.i16()?).map_err(|_| ProtocolError::Malformed("negative count"))
    }

    /// A NUL-terminated string; the NUL is consumed, not returned.
    #[inline]
    pub(crate) fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let raw = self.cstr_bytes()?;
        std::str::from_utf8(raw).map_err(|_| ProtocolError::NotUtf8)
    }

    /// A NUL-terminated string as raw bytes.
    #[inline]
    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Malformed("string without terminator"))?;
        let raw = &self.rest[..nul];
        self.rest = &self.rest[nul + 1..];
        Ok(raw)
    }

    /// An Int32 length followed by that many bytes; -1 means NULL.
    #[inline]
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        match self.i32()? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len)
                    .map_err(|_| ProtocolError::Malformed("negative value length"))?;
                self.bytes(len).map(Some)
            }
        }
    }

    /// Everything not read yet.
    #[inline]
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Fails if bytes remain: the declared length disagrees with the content.
    #[inline]
    pub(crate) fn finish(&self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Malformed(
                "trailing bytes after the last field",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_refuses_short_input() {
        let mut r = Reader::new(b"\x00\x01\xff\xff\xff\xffab\0\x00\x00\x00\x02hi");
        assert_eq!(r.i16().unwrap(), 1);
        assert_eq!(r.i32().unwrap(), -1);
        assert_eq!(r.cstr().unwrap(), "ab");
        assert_eq!(r.nullable_bytes().unwrap(), Some(&b"hi"[..]));
        assert!(r.finish().is_ok());
        assert!(r.u8().is_err());
        assert!(Reader::new(b"abc").cstr().is_err());
        assert_eq!(Reader::new(b"\xff\0").cstr(), Err(ProtocolError::NotUtf8));
        assert!(Reader::new(b"\x80\x00").count().is_err());
        assert!(Reader::new(b"\xff\xff\xff\xfe").nullable_bytes().is_err());
        assert!(Reader::new(b"\x00\x00\x00\x05ab").nullable_bytes().is_err());
    }
}
