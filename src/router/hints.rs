//! Routing hints inside one SQL comment, in PgDog's syntax: `pgdog_role:
//! primary|replica`, `pgdog_shard: N`, `pgdog_sharding_key: value`.
//!
//! It owns only reading a comment body the lexer found; it must not look
//! outside that body, allocate, or panic. A malformed hint is ignored (the
//! statement is still routed on its content), and when a key appears more
//! than once in a query the first occurrence wins.
//!
//! Accepted forms: the key in lower case, optional spaces, `:`, optional
//! spaces, then the value. Role values compare case-insensitively. A
//! sharding-key value is either quoted (`'...'` or `"..."`, no escapes) or
//! runs to the next space, comma or the end of the comment.

use super::classified::{Hints, Role, TextSpan};
use super::lex::find;

/// Reads `sql[start..end]`, a comment body, into `hints`.
pub(crate) fn read_comment(sql: &str, start: usize, end: usize, hints: &mut Hints) {
    let Some(body) = sql.as_bytes().get(start..end) else {
        return;
    };
    if find(body, b"pgdog_").is_none() {
        return;
    }
    if hints.role.is_none() {
        hints.role = value_after(body, b"pgdog_role").and_then(|at| role(&body[at..]));
    }
    if hints.shard.is_none() {
        hints.shard = value_after(body, b"pgdog_shard").and_then(|at| shard(&body[at..]));
    }
    if hints.sharding_key.is_none() {
        hints.sharding_key = value_after(body, b"pgdog_sharding_key").and_then(|at| {
            let (offset, len) = sharding_key(&body[at..])?;
            span(start + at + offset, len)
        });
    }
}

/// Where the value after `key` + `:` starts in `body`, for the first
/// occurrence of `key` that is followed by a colon. The key must not be a
/// prefix of a longer word (`pgdog_shard` is not `pgdog_sharding_key`).
fn value_after(body: &[u8], key: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = find(&body[from..], key) {
        let key_at = from + offset;
        let mut at = key_at + key.len();
        from = at;
        let preceded_by_word = key_at > 0 && is_word_byte(body[key_at - 1]);
        if preceded_by_word || body.get(at).is_some_and(|&b| is_word_byte(b)) {
            continue;
        }
        at = skip_spaces(body, at);
        if body.get(at) != Some(&b':') {
            continue;
        }
        return Some(skip_spaces(body, at + 1));
    }
    None
}

fn role(value: &[u8]) -> Option<Role> {
    let word = &value[..word_len(value)];
    if word.eq_ignore_ascii_case(b"primary") {
        Some(Role::Primary)
    } else if word.eq_ignore_ascii_case(b"replica") {
        Some(Role::Replica)
    } else {
        None
    }
}

fn shard(value: &[u8]) -> Option<u32> {
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || value.get(digits).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    value[..digits].iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// `(offset, len)` of the key inside `value`.
fn sharding_key(value: &[u8]) -> Option<(usize, usize)> {
    match value.first()? {
        &quote @ (b'\'' | b'"') => {
            let len = value[1..].iter().position(|&b| b == quote)?;
            Some((1, len))
        }
        _ => {
            let len = value
                .iter()
                .position(|&b| b.is_ascii_whitespace() || b == b',')
                .unwrap_or(value.len());
            (len > 0).then_some((0, len))
        }
    }
}

fn span(start: usize, len: usize) -> Option<TextSpan> {
    Some(TextSpan {
        start: u32::try_from(start).ok()?,
        len: u32::try_from(len).ok()?,
    })
}

fn word_len(value: &[u8]) -> usize {
    value.iter().take_while(|&&b| is_word_byte(b)).count()
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn skip_spaces(body: &[u8], mut at: usize) -> usize {
    while body.get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(comment_body: &str) -> Hints {
        let mut hints = Hints::default();
        read_comment(comment_body, 0, comment_body.len(), &mut hints);
        hints
    }

    #[test]
    fn role_values() {
        assert_eq!(hints(" pgdog_role: primary ").role, Some(Role::Primary));
        assert_eq!(hints("pgdog_role:replica").role, Some(Role::Replica));
        assert_eq!(hints("pgdog_role : REPLICA").role, Some(Role::Replica));
        assert_eq!(hints("pgdog_role: primaryx").role, None);
        assert_eq!(hints("pgdog_role primary").role, None);
        assert_eq!(hints("xpgdog_role: primary").role, None);
        assert_eq!(hints("pgdog_roles: primary").role, None);
    }

    #[test]
    fn shard_numbers() {
        assert_eq!(hints("pgdog_shard: 0").shard, Some(0));
        assert_eq!(hints("pgdog_shard:12 ").shard, Some(12));
        assert_eq!(hints("pgdog_shard: 99999999999").shard, None);
        assert_eq!(hints("pgdog_shard: 1x").shard, None);
        assert_eq!(hints("pgdog_sharding_key: 5").shard, None);
    }

    #[test]
    fn sharding_keys_are_spans_of_the_text() {
        let body = " pgdog_sharding_key: 'us-east-1' ";
        let key = hints(body).sharding_key.unwrap();
        assert_eq!(key.slice(body), Some("us-east-1"));
        let body = "pgdog_sharding_key: 1234, pgdog_role: primary";
        let parsed = hints(body);
        assert_eq!(parsed.sharding_key.unwrap().slice(body), Some("1234"));
        assert_eq!(parsed.role, Some(Role::Primary));
        assert_eq!(hints("pgdog_sharding_key: ").sharding_key, None);
        assert_eq!(hints("pgdog_sharding_key: 'open").sharding_key, None);
    }

    #[test]
    fn first_occurrence_wins() {
        let mut parsed = Hints::default();
        let sql = "/* pgdog_role: replica */ /* pgdog_role: primary */";
        read_comment(sql, 2, 23, &mut parsed);
        read_comment(sql, 28, 49, &mut parsed);
        assert_eq!(parsed.role, Some(Role::Replica));
    }
}
