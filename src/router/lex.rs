//! One pass of a small SQL lexer over a query string, collecting what the
//! classifier needs before (or instead of) calling pg_query: the first
//! keyword, how many statements there are, comment hints, calls to
//! functions that write, and `FOR UPDATE`-style locking words.
//!
//! It owns only tokenization ("sql-syntax-lexical" in the PostgreSQL docs:
//! string constants with `''` and `E'\''` escapes, quoted identifiers,
//! dollar quotes, nested block comments, line comments, `$n` parameters). It
//! must not allocate and must never panic on malformed input: an
//! unterminated string, identifier or comment runs to the end of the text.
//! It decides nothing about routing; `classify` does.

use super::classified::Hints;
use super::hints::read_comment;

/// A token's kind; positions are byte offsets into the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// An unquoted identifier or keyword: `text[start..end]`.
    Word { start: usize, end: usize },
    /// A quoted identifier; `start..end` is the inside, doubled quotes kept.
    Quoted { start: usize, end: usize },
    /// A string constant, dollar-quoted string, number or `$n` parameter.
    Constant,
    /// A comment; `start..end` is its body.
    Comment { start: usize, end: usize },
    /// `;`
    Semicolon,
    /// Any other single byte of punctuation or operator.
    Punct(u8),
}

struct Lexer<'a> {
    text: &'a [u8],
    at: usize,
    /// Where the token `next_token` returned last begins.
    token_start: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a [u8]) -> Self {
        Lexer {
            text,
            at: 0,
            token_start: 0,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.text.get(self.at + offset).copied()
    }

    fn next_token(&mut self) -> Option<Token> {
        while self
            .peek(0)
            .is_some_and(|b| b.is_ascii_whitespace() || b == 0x0b)
        {
            self.at += 1;
        }
        let byte = self.peek(0)?;
        self.token_start = self.at;
        let token = match byte {
            b'-' if self.peek(1) == Some(b'-') => self.line_comment(),
            b'/' if self.peek(1) == Some(b'*') => self.block_comment(),
            b'\'' => {
                self.at += 1;
                self.quoted(b'\'', false);
                Token::Constant
            }
            b'"' => {
                self.at += 1;
                let start = self.at;
                let end = self.quoted(b'"', false);
                Token::Quoted { start, end }
            }
            b'$' => self.dollar(),
            b';' => {
                self.at += 1;
                Token::Semicolon
            }
            b'0'..=b'9' => {
                self.at += 1;
                self.skip_while(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
                Token::Constant
            }
            b if is_ident_start(b) => self.word(),
            other => {
                self.at += 1;
                Token::Punct(other)
            }
        };
        Some(token)
    }

    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.peek(0).is_some_and(&keep) {
            self.at += 1;
        }
    }

    fn line_comment(&mut self) -> Token {
        self.at += 2;
        let start = self.at;
        self.skip_while(|b| b != b'\n' && b != b'\r');
        Token::Comment {
            start,
            end: self.at,
        }
    }

    /// Block comments nest in PostgreSQL, unlike in the SQL standard.
    fn block_comment(&mut self) -> Token {
        self.at += 2;
        let start = self.at;
        let mut depth = 1usize;
        while let Some(byte) = self.peek(0) {
            if byte == b'*' && self.peek(1) == Some(b'/') {
                depth -= 1;
                if depth == 0 {
                    let end = self.at;
                    self.at += 2;
                    return Token::Comment { start, end };
                }
                self.at += 2;
            } else if byte == b'/' && self.peek(1) == Some(b'*') {
                depth += 1;
                self.at += 2;
            } else {
                self.at += 1;
            }
        }
        Token::Comment {
            start,
            end: self.at,
        }
    }

    /// Skips to past the closing `quote` (a doubled quote is part of the
    /// content; with `backslash`, so is `\` and the byte after it). Returns
    /// where the content ends.
    fn quoted(&mut self, quote: u8, backslash: bool) -> usize {
        while let Some(byte) = self.peek(0) {
            if backslash && byte == b'\\' {
                self.at = (self.at + 2).min(self.text.len());
            } else if byte == quote {
                if self.peek(1) == Some(quote) {
                    self.at += 2;
                } else {
                    let end = self.at;
                    self.at += 1;
                    return end;
                }
            } else {
                self.at += 1;
            }
        }
        self.at
    }

    fn word(&mut self) -> Token {
        let start = self.at;
        self.at += 1;
        self.skip_while(is_ident_char);
        let end = self.at;
        // E'...' is an escape string constant: backslashes escape there.
        if end - start == 1
            && matches!(self.text[start], b'e' | b'E')
            && self.peek(0) == Some(b'\'')
        {
            self.at += 1;
            self.quoted(b'\'', true);
            return Token::Constant;
        }
        Token::Word { start, end }
    }

    /// `$1` parameter, `$tag$ ... $tag$` dollar quote, or a lone `$`.
    fn dollar(&mut self) -> Token {
        let start = self.at;
        if self.peek(1).is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
            self.skip_while(|b| b.is_ascii_digit());
            return Token::Constant;
        }
        let mut tag_end = start + 1;
        if self.text.get(tag_end).is_some_and(|&b| is_ident_start(b)) {
            tag_end += 1;
            while self
                .text
                .get(tag_end)
                .is_some_and(|&b| is_ident_char(b) && b != b'$')
            {
                tag_end += 1;
            }
        }
        if self.text.get(tag_end) != Some(&b'$') {
            self.at += 1;
            return Token::Punct(b'$');
        }
        let tag = &self.text[start..=tag_end];
        let body = tag_end + 1;
        self.at = match find(&self.text[body.min(self.text.len())..], tag) {
            Some(offset) => body + offset + tag.len(),
            None => self.text.len(),
        };
        Token::Constant
    }
}

/// Where `needle` first occurs in `haystack`.
pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

fn is_ident_char(byte: u8) -> bool {
    is_ident_start(byte) || byte.is_ascii_digit() || byte == b'$'
}

/// What one pass over a query string found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Scan {
    /// Non-empty statements, split at `;` outside quotes and comments. A
    /// `;` inside parentheses (rule actions, `BEGIN ATOMIC` bodies) counts
    /// too: only the fast path uses this, and it gives way to pg_query when
    /// the count is not 1.
    pub statements: u32,
    /// The first statement's first token when it is a word, as `start..end`.
    pub first_word: Option<(usize, usize)>,
    /// The first statement is that one word and nothing else.
    pub first_word_alone: bool,
    /// A call to a function that writes or takes a lock: see
    /// [`is_write_function`].
    pub write_call: bool,
    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE` or `FOR KEY SHARE`
    /// outside quotes and comments (may also match `substring(x FOR share)`
    /// with a column named `share`; only used where the tree walk is
    /// incomplete).
    pub locking_words: bool,
    /// Comment hints.
    pub hints: Hints,
}

/// Writes `sql`'s cache key to `out`: the text with every constant (string,
/// number, dollar-quoted body, `$n`) overwritten byte for byte with `?`, so
/// that queries differing only in their values share one classification
/// (pgbench's `... WHERE aid = 42` in the simple protocol, ORMs that inline
/// values). Lengths are kept, so spans into comments (hints) stay valid for
/// every text of the same shape; comments, identifiers and keywords are kept,
/// and they alone decide a classification. False, with `out` untouched
/// meaning nothing, when the text names `pgdog` (`SET pgdog.role TO
/// 'replica'`: there the value decides), so the caller keys by the text.
pub(crate) fn shape(sql: &str, out: &mut String) -> bool {
    let text = sql.as_bytes();
    let mut lexer = Lexer::new(text);
    out.clear();
    let mut copied = 0;
    while let Some(token) = lexer.next_token() {
        match token {
            Token::Word { start, end } if text[start..end].eq_ignore_ascii_case(b"pgdog") => {
                return false;
            }
            Token::Constant => {
                let start = lexer.token_start;
                // Constants begin and end at ASCII bytes (or the end of the
                // text), so the copied pieces stay whole UTF-8.
                out.push_str(&sql[copied..start]);
                out.extend(std::iter::repeat_n('?', lexer.at - start));
                copied = lexer.at;
            }
            _ => {}
        }
    }
    out.push_str(&sql[copied..]);
    true
}

/// The first word of `sql`, after white space and comments (nested block
/// comments too); None when the text starts with anything else.
pub(crate) fn first_word(sql: &str) -> Option<&str> {
    let mut lexer = Lexer::new(sql.as_bytes());
    loop {
        match lexer.next_token()? {
            Token::Comment { .. } => continue,
            Token::Word { start, end } => return sql.get(start..end),
            _ => return None,
        }
    }
}

/// The token at byte `at` of `sql` (white space and comments before it
/// skipped), as `start..end`. For a parse tree's `location`, which points at
/// a token's first byte: the sharding router reads key values from the text
/// of each request this way, so one plan serves every text of the same shape.
pub(super) fn token_at(sql: &str, at: usize) -> Option<(usize, usize)> {
    let text = sql.as_bytes();
    if at > text.len() {
        return None;
    }
    let mut lexer = Lexer {
        text,
        at,
        token_start: at,
    };
    loop {
        match lexer.next_token()? {
            Token::Comment { .. } => continue,
            _ => return Some((lexer.token_start, lexer.at)),
        }
    }
}

/// Scans `sql` once. Never fails: malformed text yields what was seen.
pub(crate) fn scan(sql: &str) -> Scan {
    let text = sql.as_bytes();
    let mut lexer = Lexer::new(text);
    let mut scan = Scan::default();
    let mut tokens_in_statement = 0u32;
    // The last three non-comment tokens, newest first.
    let mut recent: [Option<Token>; 3] = [None; 3];
    while let Some(token) = lexer.next_token() {
        match token {
            Token::Comment { start, end } => {
                read_comment(sql, start, end, &mut scan.hints);
                continue;
            }
            Token::Semicolon => {
                if tokens_in_statement > 0 {
                    scan.statements += 1;
                }
                tokens_in_statement = 0;
            }
            Token::Punct(b'(') => {
                if recent[0].is_some_and(|t| names_write_function(text, t)) {
                    scan.write_call = true;
                }
                tokens_in_statement += 1;
            }
            Token::Word { .. } => {
                if is_locking(text, token, &recent) {
                    scan.locking_words = true;
                }
                tokens_in_statement += 1;
            }
            _ => tokens_in_statement += 1,
        }
        if scan.statements == 0 && tokens_in_statement > 0 {
            if tokens_in_statement == 1 {
                scan.first_word = match token {
                    Token::Word { start, end } => Some((start, end)),
                    _ => None,
                };
            }
            scan.first_word_alone = tokens_in_statement == 1 && scan.first_word.is_some();
        }
        recent = [Some(token), recent[0], recent[1]];
    }
    if tokens_in_statement > 0 {
        scan.statements += 1;
    }
    scan
}

fn word_is(text: &[u8], token: Option<Token>, keyword: &str) -> bool {
    match token {
        Some(Token::Word { start, end }) => {
            text[start..end].eq_ignore_ascii_case(keyword.as_bytes())
        }
        _ => false,
    }
}

/// `token` (a word) ends `FOR [NO KEY] UPDATE` or `FOR [KEY] SHARE`.
fn is_locking(text: &[u8], token: Token, recent: &[Option<Token>; 3]) -> bool {
    let word = Some(token);
    if word_is(text, word, "update") {
        word_is(text, recent[0], "for")
            || (word_is(text, recent[0], "key")
                && word_is(text, recent[1], "no")
                && word_is(text, recent[2], "for"))
    } else if word_is(text, word, "share") {
        word_is(text, recent[0], "for")
            || (word_is(text, recent[0], "key") && word_is(text, recent[1], "for"))
    } else {
        false
    }
}

/// The token before a `(` names a write function. Unquoted names compare
/// case-insensitively (PostgreSQL folds them to lower case); quoted names
/// exactly.
fn names_write_function(text: &[u8], token: Token) -> bool {
    match token {
        Token::Word { start, end } => {
            let mut lower = [0u8; 64];
            let name = &text[start..end];
            if name.len() > lower.len() {
                return false;
            }
            for (slot, byte) in lower.iter_mut().zip(name) {
                *slot = byte.to_ascii_lowercase();
            }
            is_write_function(&lower[..name.len()])
        }
        Token::Quoted { start, end } => is_write_function(&text[start..end]),
        _ => false,
    }
}

/// Functions that change data or take locks that must stay on the primary
/// (names already case-folded). A plain `SELECT` of any other function is a
/// read, as in PgDog: a user function that writes must be routed with a
/// `pgdog_role: primary` hint or be called inside a transaction.
///
/// - `nextval`, `setval`: sequences cannot advance on a hot standby.
/// - `pg_advisory_*`, `pg_try_advisory_*`: advisory locks (and unlocks) must
///   meet their lock on the same server.
/// - `pg_notify`: the function form of `NOTIFY`.
/// - `txid_current`, `pg_current_xact_id`: assign a transaction id, which a
///   standby refuses.
/// - `lo_create`, `lo_creat`, `lo_import`, `lo_unlink`, `lo_put`,
///   `lo_from_bytea`: large-object writes.
pub(crate) fn is_write_function(name: &[u8]) -> bool {
    const EXACT: [&[u8]; 11] = [
        b"nextval",
        b"setval",
        b"pg_notify",
        b"txid_current",
        b"pg_current_xact_id",
        b"lo_create",
        b"lo_creat",
        b"lo_import",
        b"lo_unlink",
        b"lo_put",
        b"lo_from_bytea",
    ];
    name.starts_with(b"pg_advisory_")
        || name.starts_with(b"pg_try_advisory_")
        || EXACT.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(sql: &str) -> Option<&str> {
        scan(sql).first_word.map(|(start, end)| &sql[start..end])
    }

    #[test]
    fn first_word_skips_comments_and_whitespace() {
        assert_eq!(first("  /* x */ -- y\n select 1"), Some("select"));
        assert_eq!(first("/* a /* nested */ still */INSERT"), Some("INSERT"));
        assert_eq!(first("\"select\" 1"), None);
        assert_eq!(first("(select 1)"), None);
        assert_eq!(first(""), None);
    }

    #[test]
    fn alone_means_one_token_in_the_first_statement() {
        assert!(scan("BEGIN").first_word_alone);
        assert!(scan("begin ; ").first_word_alone);
        assert!(scan(" commit /* c */").first_word_alone);
        assert!(!scan("BEGIN READ ONLY").first_word_alone);
        assert!(scan("select").first_word_alone);
    }

    #[test]
    fn statements_counted_outside_quotes() {
        assert_eq!(
            scan("select ';'; select $$;$$; select E'\\';'").statements,
            3
        );
        assert_eq!(scan(";;  ; -- ;\n").statements, 0);
        assert_eq!(scan("select 1; /* ; */ select 2").statements, 2);
        assert_eq!(scan("select $tag$ ; $x$ ; $tag$").statements, 1);
        assert_eq!(scan("select \"a;b\" from t").statements, 1);
    }

    #[test]
    fn write_calls() {
        assert!(scan("select nextval('s')").write_call);
        assert!(scan("select pg_catalog.NEXTVAL ('s')").write_call);
        assert!(scan("select \"nextval\"('s')").write_call);
        assert!(!scan("select \"NEXTVAL\"('s')").write_call);
        assert!(scan("select pg_try_advisory_xact_lock(1)").write_call);
        assert!(!scan("select 'nextval(' , nextval from t").write_call);
        assert!(!scan("select 1 -- nextval(1)\n").write_call);
        assert!(!scan("select my_nextval(1)").write_call);
    }

    #[test]
    fn locking_words() {
        assert!(scan("select * from t for update").locking_words);
        assert!(scan("select * from t FOR NO KEY UPDATE").locking_words);
        assert!(scan("select * from t for key share").locking_words);
        assert!(!scan("select 'for update'").locking_words);
        assert!(!scan("select \"for\" update").locking_words);
    }

    #[test]
    fn malformed_text_never_panics() {
        for sql in [
            "'", "\"", "$", "$a", "$a$", "E'\\", "/*", "--", "/* /* */", "$1", "e", "\u{e9}'",
        ] {
            let _ = scan(sql);
        }
    }
}
