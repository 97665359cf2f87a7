//! Key values parsed from their text or binary wire form.
//!
//! Owns: turning the bytes a client sent for a sharding key (a Bind
//! parameter or a literal) into a [`Key`], accepting exactly what the
//! PostgreSQL 15 input and receive functions of the key's type accept, and
//! the key's partition hash.
//!
//! Must not: pick shards by mapping (that is `map`) or do I/O.
//!
//! Text forms ("datatype-numeric", "datatype-uuid", "datatype-character"):
//! - integers as `int2in`/`int4in`/`int8in` read them in PostgreSQL 15:
//!   optional leading and trailing whitespace (C `isspace`), an optional
//!   `+`/`-`, then one or more decimal digits, within the type's range (no
//!   underscores, no `0x` prefixes: those arrived in PostgreSQL 16);
//! - uuid as `uuid_in` reads it: 32 hex digits of either case, a hyphen
//!   optionally after any group of four digits (not after the last), the
//!   whole optionally wrapped in `{}`; no whitespace;
//! - text and varchar: any valid UTF-8 without NUL (the databases sleddog
//!   serves are UTF8; the server rejects anything else).
//!
//! Binary forms ("protocol-overview", Formats and Format Codes): integers
//! are big-endian two's complement of exactly 2, 4 or 8 bytes, uuid is its
//! 16 bytes, text and varchar are the raw bytes (same checks as text).

use crate::hash;
use crate::{DataType, Format, ShardId};

/// A sharding key value, parsed per its `DataType`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// bigint, integer and smallint (Postgres hashes equal values alike).
    Int(i64),
    /// text and varchar: the bytes as the server would store them.
    Text(Vec<u8>),
    Uuid([u8; 16]),
}

/// Why a key value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The bytes are not a value of the key's type.
    Invalid {
        data_type: &'static str,
        reason: String,
    },
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Invalid { data_type, reason } => {
                write!(f, "invalid {data_type} sharding key: {reason}")
            }
        }
    }
}

impl std::error::Error for KeyError {}

impl DataType {
    /// The SQL name, for messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            DataType::BigInt => "bigint",
            DataType::Integer => "integer",
            DataType::SmallInt => "smallint",
            DataType::Text => "text",
            DataType::Varchar => "varchar",
            DataType::Uuid => "uuid",
        }
    }

    /// Inclusive value range of an integer type.
    pub fn int_range(self) -> Option<(i64, i64)> {
        self.int_bounds().map(|(min, max, _)| (min, max))
    }

    /// Inclusive value range and binary width of an integer type.
    fn int_bounds(self) -> Option<(i64, i64, usize)> {
        match self {
            DataType::BigInt => Some((i64::MIN, i64::MAX, 8)),
            DataType::Integer => Some((i32::MIN.into(), i32::MAX.into(), 4)),
            DataType::SmallInt => Some((i16::MIN.into(), i16::MAX.into(), 2)),
            DataType::Text | DataType::Varchar | DataType::Uuid => None,
        }
    }
}

impl Key {
    /// Parses one key value sent in `format` for a column of `data_type`.
    pub fn parse(data_type: DataType, format: Format, bytes: &[u8]) -> Result<Key, KeyError> {
        let invalid = |reason: &str| KeyError::Invalid {
            data_type: data_type.sql_name(),
            reason: reason.to_string(),
        };
        match (data_type.int_bounds(), data_type, format) {
            (Some((min, max, _)), _, Format::Text) => {
                let value = parse_int_text(bytes).ok_or_else(|| invalid("not an integer"))?;
                if value < i128::from(min) || value > i128::from(max) {
                    return Err(invalid("out of range"));
                }
                i64::try_from(value)
                    .map(Key::Int)
                    .map_err(|_| invalid("out of range"))
            }
            (Some((_, _, width)), _, Format::Binary) => {
                if bytes.len() != width {
                    return Err(invalid(&format!(
                        "binary value has {} bytes, expected {width}",
                        bytes.len()
                    )));
                }
                Ok(Key::Int(be_int(bytes)))
            }
            (None, DataType::Uuid, Format::Text) => parse_uuid_text(bytes)
                .map(Key::Uuid)
                .ok_or_else(|| invalid("not a uuid")),
            (None, DataType::Uuid, Format::Binary) => <[u8; 16]>::try_from(bytes)
                .map(Key::Uuid)
                .map_err(|_| invalid("binary uuid must be 16 bytes")),
            // text and varchar: the same bytes in both formats.
            (None, _, _) => {
                if bytes.contains(&0) {
                    return Err(invalid("contains a NUL byte"));
                }
                std::str::from_utf8(bytes).map_err(|_| invalid("not valid UTF-8"))?;
                Ok(Key::Text(bytes.to_vec()))
            }
        }
    }

    /// The row hash `PARTITION BY HASH (key)` computes for this value: the
    /// type's extended hash with the partition seed, combined into a row hash.
    /// The row's remainder under modulus `m` is `partition_hash() % m`.
    pub fn partition_hash(&self) -> u64 {
        let seed = hash::HASH_PARTITION_SEED;
        let column_hash = match self {
            Key::Int(value) => hash::hash_int_extended(*value, seed),
            Key::Text(bytes) => hash::hash_text_extended(bytes, seed),
            Key::Uuid(uuid) => hash::hash_uuid_extended(uuid, seed),
        };
        hash::row_hash(column_hash)
    }

    /// The uuid in its canonical output form (`uuid_out`): lowercase,
    /// hyphenated 8-4-4-4-12.
    pub fn uuid_text(uuid: &[u8; 16]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(36);
        for (i, byte) in uuid.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }
}

/// The shard of a row hash among `shards` shards: the remainder of hash
/// partitioning with `MODULUS shards` (unsigned). Zero shards is treated as
/// one, so a misconfiguration cannot divide by zero.
pub fn hash_shard(hash: u64, shards: u16) -> ShardId {
    let modulus = u64::from(shards.max(1));
    // The remainder is below `shards`, so it fits u16.
    ShardId((hash % modulus) as u16)
}

/// C `isspace` in the "C" locale, which `pg_strtoint*` use.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `pg_strtoint64`'s grammar (PostgreSQL 15). Returns the value widened to
/// i128 so the caller range-checks per type; None when it is not an integer
/// or does not fit i128 (which is out of every range anyway).
fn parse_int_text(bytes: &[u8]) -> Option<i128> {
    let start = bytes.iter().position(|&b| !is_c_space(b))?;
    let end = bytes.iter().rposition(|&b| !is_c_space(b))? + 1;
    let trimmed = &bytes[start..end];
    let (negative, digits) = match trimmed.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: i128 = 0;
    for &digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(digit - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// A big-endian two's complement integer of 2, 4 or 8 bytes, sign-extended.
fn be_int(bytes: &[u8]) -> i64 {
    let mut value: i64 = if bytes.first().is_some_and(|&b| b & 0x80 != 0) {
        -1
    } else {
        0
    };
    for &byte in bytes {
        value = (value << 8) | i64::from(byte);
    }
    value
}

/// `uuid_in`'s grammar: optional braces, 16 pairs of hex digits, and after
/// every second pair except the last an optional hyphen.
fn parse_uuid_text(bytes: &[u8]) -> Option<[u8; 16]> {
    let inner = match bytes.split_first() {
        Some((b'{', rest)) => rest.strip_suffix(b"}")?,
        _ => bytes,
    };
    let mut uuid = [0u8; 16];
    let mut rest = inner;
    for (i, out) in uuid.iter_mut().enumerate() {
        let [high, low, tail @ ..] = rest else {
            return None;
        };
        *out = (hex_digit(*high)? << 4) | hex_digit(*low)?;
        rest = tail;
        if i % 2 == 1 && i < 15 {
            if let Some(after) = rest.strip_prefix(b"-") {
                rest = after;
            }
        }
    }
    rest.is_empty().then_some(uuid)
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(dt: DataType, s: &str) -> Result<Key, KeyError> {
        Key::parse(dt, Format::Text, s.as_bytes())
    }

    #[test]
    fn int_text_forms() {
        assert_eq!(text(DataType::BigInt, "42"), Ok(Key::Int(42)));
        assert_eq!(text(DataType::BigInt, "  +42\t\n"), Ok(Key::Int(42)));
        assert_eq!(text(DataType::BigInt, "-0"), Ok(Key::Int(0)));
        assert_eq!(text(DataType::BigInt, "007"), Ok(Key::Int(7)));
        assert_eq!(
            text(DataType::BigInt, "-9223372036854775808"),
            Ok(Key::Int(i64::MIN))
        );
        assert_eq!(
            text(DataType::BigInt, "9223372036854775807"),
            Ok(Key::Int(i64::MAX))
        );
        for bad in [
            "",
            " ",
            "+",
            "-",
            "1 2",
            "1_000",
            "0x10",
            "1.0",
            "1e3",
            "- 1",
            "++1",
            "١",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999999999999999999999999999",
        ] {
            assert!(text(DataType::BigInt, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn int_ranges_per_type() {
        assert_eq!(text(DataType::SmallInt, "-32768"), Ok(Key::Int(-32768)));
        assert!(text(DataType::SmallInt, "32768").is_err());
        assert_eq!(
            text(DataType::Integer, "2147483647"),
            Ok(Key::Int(2147483647))
        );
        assert!(text(DataType::Integer, "-2147483649").is_err());
    }

    #[test]
    fn int_binary_forms() {
        let bin = |dt, b: &[u8]| Key::parse(dt, Format::Binary, b);
        assert_eq!(
            bin(DataType::BigInt, &(-5i64).to_be_bytes()),
            Ok(Key::Int(-5))
        );
        assert_eq!(
            bin(DataType::Integer, &i32::MIN.to_be_bytes()),
            Ok(Key::Int(i32::MIN.into()))
        );
        assert_eq!(
            bin(DataType::SmallInt, &(-2i16).to_be_bytes()),
            Ok(Key::Int(-2))
        );
        assert_eq!(bin(DataType::SmallInt, &[0x01, 0x00]), Ok(Key::Int(256)));
        assert!(bin(DataType::BigInt, &[0; 4]).is_err());
        assert!(bin(DataType::Integer, &[0; 8]).is_err());
        assert!(bin(DataType::SmallInt, &[]).is_err());
    }

    #[test]
    fn uuid_text_forms() {
        let want = Key::Uuid([
            0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
            0x0a, 0x11,
        ]);
        for ok in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
        ] {
            assert_eq!(text(DataType::Uuid, ok), Ok(want.clone()), "{ok}");
        }
        for bad in [
            "",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert!(text(DataType::Uuid, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuid_binary_and_canonical_text() {
        let bytes: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(
            Key::parse(DataType::Uuid, Format::Binary, &bytes),
            Ok(Key::Uuid(bytes))
        );
        assert!(Key::parse(DataType::Uuid, Format::Binary, &bytes[..15]).is_err());
        assert_eq!(
            Key::uuid_text(&bytes),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
    }

    #[test]
    fn text_checks_utf8_and_nul() {
        for format in [Format::Text, Format::Binary] {
            assert_eq!(
                Key::parse(DataType::Text, format, "żółw".as_bytes()),
                Ok(Key::Text("żółw".as_bytes().to_vec()))
            );
            assert_eq!(
                Key::parse(DataType::Varchar, format, b""),
                Ok(Key::Text(Vec::new()))
            );
            assert!(Key::parse(DataType::Text, format, &[0xff, 0xfe]).is_err());
            assert!(Key::parse(DataType::Varchar, format, b"a\0b").is_err());
        }
    }

    #[test]
    fn hash_shard_is_unsigned_remainder() {
        assert_eq!(hash_shard(u64::MAX, 16), ShardId(15));
        assert_eq!(hash_shard(17, 5), ShardId(2));
        assert_eq!(hash_shard(17, 0), ShardId(0));
    }

    #[test]
    fn error_names_the_type() {
        let err = text(DataType::SmallInt, "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid smallint sharding key: not an integer"
        );
    }
}
