//! Key expressions: what a statement's WHERE clause or VALUES rows say about
//! its sharding key, planned once per statement text, and their evaluation
//! against one request's text and parameters.
//!
//! Values are not copied into the plan: a [`Value`] is where a constant or
//! `$n` starts in the planned text, and it is read again from each request's
//! text. Texts of the same shape (`lex::shape`: constants overwritten byte
//! for byte) have their tokens at the same places, so one plan serves them
//! all. This module must not parse more than one token at a time, and must
//! not allocate for a key unless the literal holds escapes.

use shards::{Format, ShardId};

use super::super::lex::token_at;
use super::{unsupported, ResolveInput, RouteError};

/// Where a key value is in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    /// `NULL`, or the key column missing from an INSERT's column list.
    Null,
    /// A constant or `$n` at this byte offset (a leading `-` included).
    At(u32),
}

/// One key comparison: the rule (an index into `ShardingSchema::tables`)
/// and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Leaf {
    pub rule: u16,
    pub value: Value,
    /// An INSERT's value. NULL then has a shard (hash partitioning puts NULL
    /// in the partition of remainder 0), while `key = NULL` in a WHERE clause
    /// matches no row.
    pub insert: bool,
}

/// A key constraint; `None` where one is expected means "any shard".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyExpr {
    Leaf(Leaf),
    And(Vec<KeyExpr>),
    Or(Vec<KeyExpr>),
    /// A multi-row INSERT: every row must go to the same shard.
    Rows(Vec<Leaf>),
}

/// Conjunction: either side narrows.
pub(super) fn and(left: Option<KeyExpr>, right: Option<KeyExpr>) -> Option<KeyExpr> {
    match (left, right) {
        (None, other) | (other, None) => other,
        (Some(KeyExpr::And(mut list)), Some(other)) => {
            list.push(other);
            Some(KeyExpr::And(list))
        }
        (Some(left), Some(right)) => Some(KeyExpr::And(vec![left, right])),
    }
}

/// Disjunction: an unconstrained side makes the whole unconstrained.
pub(super) fn or(left: Option<KeyExpr>, right: Option<KeyExpr>) -> Option<KeyExpr> {
    match (left?, right?) {
        (KeyExpr::Or(mut list), other) => {
            list.push(other);
            Some(KeyExpr::Or(list))
        }
        (left, right) => Some(KeyExpr::Or(vec![left, right])),
    }
}

/// The shards a key constraint allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Set {
    /// No constraint.
    Unconstrained,
    /// No row can match (`key = NULL`, a value no shard is mapped to).
    Empty,
    One(ShardId),
    /// Two or more, sorted and deduplicated.
    Many(Vec<ShardId>),
}

impl Set {
    /// Conjunction. When the sides contradict each other (`key = 1 AND key
    /// = 2` on different shards) no row matches anywhere, and the left side's
    /// shard answers as well as any.
    fn intersect(self, other: Set) -> Set {
        match (self, other) {
            (Set::Unconstrained, other) | (other, Set::Unconstrained) => other,
            (Set::Empty, _) | (_, Set::Empty) => Set::Empty,
            (Set::One(shard), _) => Set::One(shard),
            (Set::Many(list), Set::One(shard)) => Set::One(if list.contains(&shard) {
                shard
            } else {
                list[0]
            }),
            (Set::Many(left), Set::Many(right)) => {
                let both: Vec<ShardId> = left
                    .iter()
                    .copied()
                    .filter(|shard| right.contains(shard))
                    .collect();
                match both.len() {
                    0 => Set::One(left[0]),
                    1 => Set::One(both[0]),
                    _ => Set::Many(both),
                }
            }
        }
    }

    fn union(self, other: Set) -> Set {
        match (self, other) {
            (Set::Unconstrained, _) | (_, Set::Unconstrained) => Set::Unconstrained,
            (Set::Empty, other) | (other, Set::Empty) => other,
            (Set::One(left), Set::One(right)) if left == right => Set::One(left),
            (left, right) => {
                let mut list = left.into_list();
                list.extend(right.into_list());
                list.sort_unstable();
                list.dedup();
                Set::Many(list)
            }
        }
    }

    fn into_list(self) -> Vec<ShardId> {
        match self {
            Set::One(shard) => vec![shard],
            Set::Many(list) => list,
            Set::Unconstrained | Set::Empty => Vec::new(),
        }
    }
}

impl KeyExpr {
    pub(super) fn eval(&self, input: &ResolveInput<'_>) -> Result<Set, RouteError> {
        match self {
            KeyExpr::Leaf(leaf) => leaf.eval(input),
            KeyExpr::And(list) => list.iter().try_fold(Set::Unconstrained, |acc, expr| {
                Ok(acc.intersect(expr.eval(input)?))
            }),
            KeyExpr::Or(list) => list
                .iter()
                .try_fold(Set::Empty, |acc, expr| Ok(acc.union(expr.eval(input)?))),
            KeyExpr::Rows(rows) => {
                let mut first: Option<ShardId> = None;
                for leaf in rows {
                    let Set::One(shard) = leaf.eval(input)? else {
                        continue;
                    };
                    match first {
                        Some(seen) if seen != shard => {
                            return Err(unsupported(
                                "multi-row INSERT spanning shards",
                                "send one row per INSERT",
                            ))
                        }
                        _ => first = Some(shard),
                    }
                }
                Ok(first.map_or(Set::Unconstrained, Set::One))
            }
        }
    }
}

impl Leaf {
    /// The shard of this comparison's value. An INSERT's value always has
    /// one (or the statement fails); a WHERE comparison may have none.
    pub(super) fn eval(&self, input: &ResolveInput<'_>) -> Result<Set, RouteError> {
        let Some(rule) = input.schema.tables.get(usize::from(self.rule)) else {
            // Planned against another shard map: no key.
            return Ok(Set::Unconstrained);
        };
        let value = match self.value {
            Value::Null => Read::Null,
            Value::At(at) => read(input, at),
        };
        let shard = match &value {
            Read::Null if !self.insert => return Ok(Set::Empty),
            Read::Null => rule.shard(None, Format::Text, input.schema.shards)?,
            Read::Unusable if self.insert => return Err(expression_key()),
            Read::Unusable => return Ok(Set::Unconstrained),
            Read::Bytes(bytes, format) => {
                rule.shard(Some(bytes.as_slice()), *format, input.schema.shards)?
            }
        };
        match shard {
            Some(shard) => Ok(Set::One(shard)),
            None if self.insert => Err(RouteError::Unmapped),
            None => Ok(Set::Empty),
        }
    }
}

pub(super) fn expression_key() -> RouteError {
    unsupported(
        "a sharding key value that is not a constant or a parameter",
        "pass the sharding key as a constant or a $n parameter",
    )
}

/// Key bytes, borrowed from the text or a parameter wherever possible.
#[derive(Debug)]
pub(super) enum Bytes<'a> {
    Borrowed(&'a [u8]),
    /// A negative number written with a space after the sign.
    Stack([u8; 24], usize),
    /// A string constant with escapes.
    Owned(Vec<u8>),
}

impl Bytes<'_> {
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Borrowed(bytes) => bytes,
            Bytes::Stack(buffer, len) => &buffer[..*len],
            Bytes::Owned(bytes) => bytes,
        }
    }
}

/// One value read from a request.
#[derive(Debug)]
pub(super) enum Read<'a> {
    Null,
    Bytes(Bytes<'a>, Format),
    /// Not a value this router reads: a float, a bit string, a missing
    /// parameter, a text that does not match the plan.
    Unusable,
}

/// The format of parameter `index` given Bind's format codes.
fn param_format(codes: &[i16], index: usize) -> Format {
    match crate::protocol::frontend::format_code(codes, index) {
        1 => Format::Binary,
        _ => Format::Text,
    }
}

fn read<'a>(input: &ResolveInput<'a>, at: u32) -> Read<'a> {
    let sql = input.sql;
    let Some((start, end)) = usize::try_from(at).ok().and_then(|at| token_at(sql, at)) else {
        return Read::Unusable;
    };
    let token = &sql.as_bytes()[start..end];
    match token {
        [b'$', digits @ ..] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
            param(input, digits)
        }
        _ => match constant(sql, start, end) {
            Some(bytes) => Read::Bytes(bytes, Format::Text),
            None => Read::Unusable,
        },
    }
}

/// The value of the constant token `sql[start..end]` in text format: an
/// integer (with its sign), a string constant, a dollar-quoted string.
pub(super) fn constant(sql: &str, start: usize, end: usize) -> Option<Bytes<'_>> {
    let token = sql.as_bytes().get(start..end)?;
    match token {
        [b'-'] => negative(sql, end),
        [b'0'..=b'9', ..] if token.iter().all(u8::is_ascii_digit) => Some(Bytes::Borrowed(token)),
        [b'\'', ..] => string(token, false),
        [b'e' | b'E', b'\'', ..] => string(&token[1..], true),
        [b'$', ..] => dollar(token),
        _ => None,
    }
}

fn param<'a>(input: &ResolveInput<'a>, digits: &[u8]) -> Read<'a> {
    let number = digits.iter().try_fold(0usize, |acc, &digit| {
        acc.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
    });
    let Some(index) = number.and_then(|number| number.checked_sub(1)) else {
        return Read::Unusable;
    };
    match input.params.get(index) {
        Some(Some(bytes)) => Read::Bytes(
            Bytes::Borrowed(bytes),
            param_format(input.param_formats, index),
        ),
        Some(None) => Read::Null,
        None => Read::Unusable,
    }
}

/// `-` then a number (the parser folds the sign into the constant).
fn negative(sql: &str, after_sign: usize) -> Option<Bytes<'_>> {
    let (start, end) = token_at(sql, after_sign)?;
    let digits = &sql.as_bytes()[start..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if start == after_sign {
        return Some(Bytes::Borrowed(&sql.as_bytes()[after_sign - 1..end]));
    }
    let mut buffer = [0u8; 24];
    if digits.len() >= buffer.len() {
        return None;
    }
    buffer[0] = b'-';
    buffer[1..=digits.len()].copy_from_slice(digits);
    Some(Bytes::Stack(buffer, digits.len() + 1))
}

/// `'...'` with `''` for a quote; with `escapes` (`E'...'`) also backslash
/// escapes ("sql-syntax-strings-escape"), of which only the one-character
/// forms are read: octal, hex and Unicode escapes make the value unusable.
fn string(token: &[u8], escapes: bool) -> Option<Bytes<'_>> {
    let inner = token.strip_prefix(b"'")?.strip_suffix(b"'")?;
    let plain = !(inner.contains(&b'\'') || escapes && inner.contains(&b'\\'));
    if plain {
        return Some(Bytes::Borrowed(inner));
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\'' => {
                bytes.next();
                out.push(b'\'');
            }
            b'\\' if escapes => {
                let decoded = match bytes.next() {
                    Some(b'n') => b'\n',
                    Some(b't') => b'\t',
                    Some(b'r') => b'\r',
                    Some(b'b') => 0x08,
                    Some(b'f') => 0x0c,
                    Some(b'0'..=b'7' | b'x' | b'u' | b'U') | None => return None,
                    Some(other) => other,
                };
                out.push(decoded);
            }
            other => out.push(other),
        }
    }
    Some(Bytes::Owned(out))
}

/// `$tag$...$tag$`.
fn dollar(token: &[u8]) -> Option<Bytes<'_>> {
    let tag_len = token[1..].iter().position(|&b| b == b'$')?;
    let tag = &token[..tag_len + 2];
    let inner = token.strip_prefix(tag)?.strip_suffix(tag)?;
    Some(Bytes::Borrowed(inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::ShardingSchema;

    fn read_text(sql: &str, at: u32, params: &[Option<&[u8]>]) -> Option<Vec<u8>> {
        let schema = ShardingSchema::default();
        let input = ResolveInput::new(sql, &schema).with_params(params, &[]);
        match read(&input, at) {
            Read::Bytes(bytes, _) => Some(bytes.as_slice().to_vec()),
            Read::Null => Some(b"NULL".to_vec()),
            Read::Unusable => None,
        }
    }

    #[test]
    fn values_are_read_from_the_text() {
        assert_eq!(read_text("x = 42", 4, &[]).unwrap(), b"42");
        assert_eq!(read_text("x = -42", 4, &[]).unwrap(), b"-42");
        assert_eq!(read_text("x = - 42", 4, &[]).unwrap(), b"-42");
        assert_eq!(read_text("x = 'ab'", 4, &[]).unwrap(), b"ab");
        assert_eq!(read_text("x = 'a''b'", 4, &[]).unwrap(), b"a'b");
        assert_eq!(read_text("x = E'a\\'b'", 4, &[]).unwrap(), b"a'b");
        assert_eq!(read_text("x = $q$a'b$q$", 4, &[]).unwrap(), b"a'b");
        assert_eq!(read_text("x = $$ab$$", 4, &[]).unwrap(), b"ab");
        assert_eq!(read_text("x = $2", 4, &[None, Some(b"7")]).unwrap(), b"7");
        assert_eq!(read_text("x = $1", 4, &[None]).unwrap(), b"NULL");
        assert_eq!(read_text("x = $3", 4, &[None]), None);
        assert_eq!(read_text("x = 4.5", 4, &[]), None);
        assert_eq!(read_text("x = E'\\x41'", 4, &[]), None);
        assert_eq!(read_text("x = B'101'", 4, &[]), None);
        assert_eq!(read_text("x", 40, &[]), None);
    }

    #[test]
    fn bind_format_rules() {
        use Format::{Binary, Text};
        assert_eq!(param_format(&[], 3), Text);
        assert_eq!(param_format(&[1], 3), Binary);
        assert_eq!(param_format(&[0, 1], 1), Binary);
        assert_eq!(param_format(&[0, 1], 5), Text);
    }

    #[test]
    fn set_algebra() {
        let one = |n| Set::One(ShardId(n));
        assert_eq!(one(1).intersect(one(2)), one(1));
        assert_eq!(Set::Unconstrained.intersect(one(2)), one(2));
        assert_eq!(
            one(1).union(one(2)),
            Set::Many(vec![ShardId(1), ShardId(2)])
        );
        assert_eq!(one(1).union(Set::Empty), one(1));
        assert_eq!(one(1).union(Set::Unconstrained), Set::Unconstrained);
        let many = Set::Many(vec![ShardId(1), ShardId(3)]);
        assert_eq!(many.clone().intersect(one(3)), one(3));
        assert_eq!(
            many.intersect(Set::Many(vec![ShardId(0), ShardId(2)])),
            one(1)
        );
    }
}
