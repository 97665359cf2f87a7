//! PostgreSQL's extended hash functions, seeded as hash partitioning seeds them.
//!
//! Owns: Bob Jenkins' lookup3 hash in the 64-bit "extended" form PostgreSQL
//! uses for `PARTITION BY HASH` (`hash_bytes_extended`,
//! `hash_bytes_uint32_extended` in src/common/hashfn.c), the per-type hash
//! support functions partitioning calls (`hashint8extended`,
//! `hashtextextended`, `uuid_hash_extended`), and how partitioning turns one
//! column's hash into a row hash (`compute_partition_hash_value` in
//! src/backend/partitioning/partbounds.c).
//!
//! Must not: parse key values (that is `key`) or know about shard maps.
//!
//! Byte order: PostgreSQL reads the key in 32-bit words in native order when
//! the buffer is aligned and byte by byte otherwise; on little-endian hosts
//! both paths compute the same value, the one written here (bytes assembled
//! little-endian). Big-endian servers hash differently; sleddog matches
//! little-endian servers (x86-64, aarch64), which is what the golden tests
//! (tests/placement.rs) check against a real server.

/// The seed every hash-partition support function receives
/// (`HASH_PARTITION_SEED` in src/include/catalog/partition.h).
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The constant `hash_combine64` adds (64 bits of random data chosen by
/// PostgreSQL, src/include/common/hashfn.h).
const COMBINE64_CONSTANT: u64 = 0x49a0_f4dd_15e5_a8e3;

/// lookup3's initial value: the golden ratio plus an arbitrary constant.
const INITIAL: u32 = 0x9e37_79b9_u32.wrapping_add(3_923_095);

/// lookup3 `mix`: reversibly mixes three 32-bit words.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3 `final`: the last avalanche of three words into `b` and `c`.
fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// The three state words for a key of `len` bytes and a seed: a non-zero seed
/// is folded in (high half into `a`, low half into `b`) and mixed once; a zero
/// seed leaves the state as the plain 32-bit hash starts it.
fn initial_state(len: u32, seed: u64) -> (u32, u32, u32) {
    let start = INITIAL.wrapping_add(len);
    let (mut a, mut b, mut c) = (start, start, start);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// Up to four bytes as a little-endian word, missing high bytes zero.
fn word_le(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0u32, |w, (i, &byte)| w | (u32::from(byte) << (8 * i)))
}

/// `hash_bytes_extended(k, keylen, seed)`: the 64-bit lookup3 hash of a byte
/// string, `b` in the high half and `c` in the low half.
///
/// PostgreSQL passes the length as an `int` and adds it as a `uint32`; keys
/// here are far below 4 GiB (the protocol caps a value at 1 GiB), so the
/// truncating cast below is exact.
pub fn hash_bytes_extended(key: &[u8], seed: u64) -> u64 {
    let (mut a, mut b, mut c) = initial_state(key.len() as u32, seed);
    let mut rest = key;
    while rest.len() >= 12 {
        a = a.wrapping_add(word_le(&rest[0..4]));
        b = b.wrapping_add(word_le(&rest[4..8]));
        c = c.wrapping_add(word_le(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    // The last 0..=11 bytes: a takes bytes 0..4, b 4..8, and c 8..11 shifted
    // up one byte, because c's lowest byte is reserved for the length (which
    // lookup3 already folded into the initial state).
    a = a.wrapping_add(word_le(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word_le(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word_le(&rest[8..]) << 8);
    }
    finish(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_bytes_uint32_extended(k, seed)`: the 64-bit hash of one 32-bit word
/// (what the integer hash functions use; not the same as hashing its 4 bytes).
pub fn hash_bytes_uint32_extended(value: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = initial_state(4, seed);
    a = a.wrapping_add(value);
    finish(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hashint8extended`: an int8 folded to 32 bits, then hashed as one word.
///
/// The high half is folded into the low half (inverted for negative values)
/// so that an int8 holding an int4's or int2's value folds to that value's
/// own 32-bit pattern: `hashint4extended` and `hashint2extended` hash the
/// (sign-extended) value directly, and all three agree for equal values,
/// which is what lets cross-type hash joins and partitioning work. This
/// function therefore serves bigint, integer and smallint alike.
pub fn hash_int_extended(value: i64, seed: u64) -> u64 {
    let low = value as u32;
    let high = (value >> 32) as u32;
    let folded = if value >= 0 { low ^ high } else { low ^ !high };
    hash_bytes_uint32_extended(folded, seed)
}

/// `hashtextextended` under a deterministic collation (the default one, "C"
/// and every libc collation): the hash of the value's bytes. varchar uses the
/// text operator class, so the same function. Nondeterministic ICU collations
/// hash a sort key instead; sharding on such a column is not supported.
pub fn hash_text_extended(bytes: &[u8], seed: u64) -> u64 {
    hash_bytes_extended(bytes, seed)
}

/// `uuid_hash_extended`: the hash of the 16 bytes.
pub fn hash_uuid_extended(uuid: &[u8; 16], seed: u64) -> u64 {
    hash_bytes_extended(uuid, seed)
}

/// `hash_combine64(a, b)`: how partitioning accumulates column hashes.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(COMBINE64_CONSTANT)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// The row hash of a one-column partition key whose column hash (computed
/// with [`HASH_PARTITION_SEED`]) is `column_hash`: `compute_partition_hash_value`
/// starts from 0 and combines each non-NULL column's hash. The row then goes
/// to remainder `row_hash % modulus` (unsigned).
pub fn row_hash(column_hash: u64) -> u64 {
    hash_combine64(0, column_hash)
}

/// The row hash of a NULL key: `compute_partition_hash_value` skips NULL
/// columns, so a one-column key that is NULL leaves the row hash at 0 and
/// the row goes to remainder 0 (hash partitioning has no NULL partition).
pub const NULL_ROW_HASH: u64 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    /// Values returned by PostgreSQL 15 (x86-64) for `hashint8extended`,
    /// `hashtextextended` and `uuid_hash_extended`, printed as bigint.
    #[test]
    fn golden_values_from_postgres() {
        let s = HASH_PARTITION_SEED;
        let cases: [(u64, i64); 11] = [
            (hash_int_extended(0, s), -4403592609991167795),
            (hash_int_extended(1, s), 5968994663651403477),
            (hash_int_extended(-1, s), -5017072347659237694),
            (hash_int_extended(i64::MAX, s), 4938542303000433043),
            (hash_text_extended(b"", s), -5700645584453517373),
            (hash_text_extended(b"a", s), -6705225459120232837),
            (hash_text_extended(b"hello world!", s), -1886269529411655687),
            (
                hash_text_extended("żółw".as_bytes(), s),
                -3567900027931110888,
            ),
            (
                hash_text_extended(b"abcdefghijklmnopqrstuvwxyz", 0),
                -6612928417832572997,
            ),
            (hash_uuid_extended(&[0; 16], s), -5281082146396728638),
            (
                hash_uuid_extended(
                    &[
                        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9,
                        0xbd, 0x38, 0x0a, 0x11,
                    ],
                    s,
                ),
                424513190990560493,
            ),
        ];
        for (i, (ours, postgres)) in cases.iter().enumerate() {
            assert_eq!(*ours, *postgres as u64, "case {i}");
        }
    }

    #[test]
    fn int_widths_hash_alike() {
        for v in [
            0i64,
            1,
            -1,
            2,
            -2,
            32767,
            -32768,
            i32::MAX.into(),
            i32::MIN.into(),
        ] {
            let as_u32 = v as i32 as u32;
            assert_eq!(
                hash_int_extended(v, HASH_PARTITION_SEED),
                hash_bytes_uint32_extended(as_u32, HASH_PARTITION_SEED),
                "value {v}"
            );
        }
    }

    #[test]
    fn seed_zero_skips_the_seed_mix() {
        // With seed 0 the state is not mixed; a different seed changes both halves.
        let zero = hash_bytes_extended(b"abc", 0);
        let seeded = hash_bytes_extended(b"abc", HASH_PARTITION_SEED);
        assert_ne!(zero >> 32, seeded >> 32);
        assert_ne!(zero as u32, seeded as u32);
    }

    #[test]
    fn every_tail_length_contributes() {
        // Each extra byte in every tail position changes the hash.
        let data: Vec<u8> = (1..=40).collect();
        let mut seen = std::collections::HashSet::new();
        for len in 0..=data.len() {
            assert!(seen.insert(hash_bytes_extended(&data[..len], HASH_PARTITION_SEED)));
        }
    }

    #[test]
    fn combine_from_zero_adds_the_constant() {
        assert_eq!(row_hash(0), COMBINE64_CONSTANT);
        assert_eq!(row_hash(u64::MAX), COMBINE64_CONSTANT.wrapping_sub(1));
    }
}
