//! Message bodies (without the 5-byte header) for the fan-out tests.

use bytes::{BufMut, BytesMut};

use crate::protocol::write;

/// A DataRow body of text values; `None` is NULL.
pub fn row(values: &[Option<&str>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write::data_row_text(&mut out, values);
    out[5..].to_vec()
}

/// A RowDescription body of text-format columns (name, type oid) of the
/// table `table_oid`, which differs between shard databases.
pub fn description(columns: &[(&str, u32)], table_oid: u32) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(columns.len() as u16);
    for (name, oid) in columns {
        body.put_slice(name.as_bytes());
        body.put_u8(0);
        body.put_u32(table_oid);
        body.put_i16(1);
        body.put_u32(*oid);
        body.put_i16(match oid {
            20 => 8,
            23 => 4,
            _ => -1,
        });
        body.put_i32(-1);
        body.put_i16(0);
    }
    body.to_vec()
}
