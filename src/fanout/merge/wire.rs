//! The two message bodies the merger reads, RowDescription and DataRow, and
//! the DataRow and RowDescription messages it writes for the client
//! ("protocol-message-formats"). Every read is bounds-checked: malformed
//! bytes become `MergeError::Protocol`, never a panic. Knows nothing of
//! plans or values.

use bytes::{BufMut, Bytes, BytesMut};

use super::MergeError;
use crate::fanout::datum::ColumnType;
use crate::protocol::{write, BackendKind};

/// One field of a RowDescription, without the table oid and attribute
/// number (they name a table of one shard's database, so shards differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDescription {
    pub name: Vec<u8>,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

impl FieldDescription {
    pub fn column_type(&self) -> ColumnType {
        ColumnType {
            oid: self.type_oid,
            binary: self.format == 1,
        }
    }

    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A parsed RowDescription body, kept whole so the client's description is
/// a byte slice of the first shard's.
#[derive(Debug, Clone)]
pub(crate) struct RowDescription {
    body: Bytes,
    pub fields: Vec<FieldDescription>,
    /// Byte offset in `body` just past each field.
    field_ends: Vec<usize>,
}

impl RowDescription {
    /// Body: i16 field count, then per field: name (cstring), i32 table oid,
    /// i16 attnum, i32 type oid, i16 typlen, i32 typmod, i16 format.
    pub fn parse(body: &[u8]) -> Result<RowDescription, MergeError> {
        let mut reader = Reader::new(body, "RowDescription");
        let count = reader.count()?;
        let mut fields = Vec::with_capacity(count);
        let mut field_ends = Vec::with_capacity(count);
        for _ in 0..count {
            let name = reader.cstring()?.to_vec();
            let _table_oid = reader.i32()?;
            let _attnum = reader.i16()?;
            let type_oid = reader.i32()? as u32;
            let type_len = reader.i16()?;
            let type_modifier = reader.i32()?;
            let format = reader.i16()?;
            if format != 0 && format != 1 {
                return Err(reader.malformed(&format!("format code {format}")));
            }
            fields.push(FieldDescription {
                name,
                type_oid,
                type_len,
                type_modifier,
                format,
            });
            field_ends.push(reader.pos);
        }
        reader.end()?;
        Ok(RowDescription {
            body: Bytes::copy_from_slice(body),
            fields,
            field_ends,
        })
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn column_type(&self, column: usize) -> ColumnType {
        self.fields[column].column_type()
    }

    /// The whole RowDescription message with only the first `visible`
    /// fields (`visible <= len()`).
    pub fn write_visible(&self, visible: usize, out: &mut BytesMut) {
        let end = match visible.checked_sub(1) {
            Some(last) => self.field_ends[last],
            None => 2,
        };
        let fields = &self.body[2..end];
        let tag = BackendKind::RowDescription.tag();
        write::put_message(out, tag, 2 + fields.len(), |out| {
            out.put_i16(i16::try_from(visible).expect("visible <= a parsed i16 count"));
            out.put_slice(fields);
        });
    }
}

/// Where one column sits in a DataRow body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    /// Offset of the column's i32 length.
    pub start: usize,
    /// Offset just past its value.
    pub end: usize,
    pub null: bool,
}

impl Span {
    /// The value bytes, `None` for NULL.
    #[inline]
    pub fn value<'a>(&self, body: &'a [u8]) -> Option<&'a [u8]> {
        if self.null {
            None
        } else {
            Some(&body[self.start + 4..self.end])
        }
    }

    /// The length and the value, as they sit in the row.
    #[inline]
    pub fn raw<'a>(&self, body: &'a [u8]) -> &'a [u8] {
        &body[self.start..self.end]
    }
}

/// Splits a DataRow body (i16 count, then per column i32 length, -1 for
/// NULL, and the bytes) into `spans`, checking it has `columns` columns and
/// no bytes past the last.
pub(super) fn split_data_row(
    body: &[u8],
    columns: usize,
    spans: &mut Vec<Span>,
) -> Result<(), MergeError> {
    spans.clear();
    let mut reader = Reader::new(body, "DataRow");
    let count = reader.count()?;
    if count != columns {
        return Err(reader.malformed(&format!(
            "{count} columns where the RowDescription has {columns}"
        )));
    }
    for _ in 0..count {
        let start = reader.pos;
        let len = reader.i32()?;
        let null = len == -1;
        if !null {
            let len = usize::try_from(len)
                .map_err(|_| reader.malformed(&format!("column length {len}")))?;
            reader.take(len)?;
        }
        spans.push(Span {
            start,
            end: reader.pos,
            null,
        });
    }
    reader.end()
}

/// Offset just past the `visible`-th column of a split row.
#[inline]
pub(super) fn visible_end(spans: &[Span], visible: usize) -> usize {
    match visible.checked_sub(1) {
        Some(last) => spans[last].end,
        None => 2,
    }
}

/// A whole DataRow message of `columns` columns whose length-prefixed
/// values are `values`.
pub(super) fn write_data_row(out: &mut BytesMut, columns: usize, values: &[u8]) {
    write::put_message(out, BackendKind::DataRow.tag(), 2 + values.len(), |out| {
        out.put_i16(i16::try_from(columns).expect("column count came from an i16"));
        out.put_slice(values);
    });
}

/// A bounds-checked cursor over one message body.
struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8], message: &'static str) -> Self {
        Reader {
            body,
            pos: 0,
            message,
        }
    }

    fn malformed(&self, what: &str) -> MergeError {
        MergeError::Protocol(format!(
            "malformed {} at byte {}: {what}",
            self.message, self.pos
        ))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], MergeError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.body.len())
            .ok_or_else(|| self.malformed("message ends early"))?;
        let bytes = &self.body[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn i16(&mut self) -> Result<i16, MergeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, MergeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn count(&mut self) -> Result<usize, MergeError> {
        let count = self.i16()?;
        usize::try_from(count).map_err(|_| self.malformed(&format!("count {count}")))
    }

    fn cstring(&mut self) -> Result<&'a [u8], MergeError> {
        let rest = &self.body[self.pos..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.malformed("unterminated name"))?;
        let name = &rest[..len];
        self.pos += len + 1;
        Ok(name)
    }

    fn end(&self) -> Result<(), MergeError> {
        if self.pos == self.body.len() {
            Ok(())
        } else {
            Err(self.malformed("bytes after the last column"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_row_spans() {
        // 3 columns: 'ab', NULL, ''
        let body = [0, 3, 0, 0, 0, 2, b'a', b'b', 255, 255, 255, 255, 0, 0, 0, 0];
        let mut spans = Vec::new();
        split_data_row(&body, 3, &mut spans).unwrap();
        assert_eq!(spans[0].value(&body), Some(&b"ab"[..]));
        assert_eq!(spans[1].value(&body), None);
        assert_eq!(spans[2].value(&body), Some(&b""[..]));
        assert_eq!(spans[1].raw(&body), &[255, 255, 255, 255]);
        assert_eq!(visible_end(&spans, 1), 8);
        assert_eq!(visible_end(&spans, 0), 2);
    }

    #[test]
    fn malformed_data_rows_are_errors() {
        let mut spans = Vec::new();
        for body in [
            &[][..],
            &[0],
            &[0, 1],
            &[0, 1, 0, 0, 0, 5, b'a'],
            &[0, 1, 255, 255, 255, 254],
            &[0, 1, 0, 0, 0, 0, 9],
            &[255, 255],
            &[0, 2, 0, 0, 0, 0],
            &[0, 1, 127, 255, 255, 255],
        ] {
            let err = split_data_row(body, 1, &mut spans).unwrap_err();
            assert!(matches!(err, MergeError::Protocol(_)), "{body:?}: {err}");
        }
    }

    #[test]
    fn malformed_descriptions_are_errors() {
        for body in [
            &[][..],
            &[0, 1],
            &[0, 1, b'a'],
            &[0, 1, b'a', 0, 0, 0],
            &[0, 0, 1],
        ] {
            let err = RowDescription::parse(body).unwrap_err();
            assert!(matches!(err, MergeError::Protocol(_)), "{body:?}: {err}");
        }
    }

    #[test]
    fn data_row_golden_bytes() {
        let mut out = BytesMut::new();
        write_data_row(&mut out, 1, &[0, 0, 0, 1, b'7']);
        assert_eq!(&out[..], &[b'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, b'7']);
    }
}
