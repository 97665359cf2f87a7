//! A one-pass, allocation-free scan of a simple-protocol SQL string that says
//! which statements may leave session state behind on a server connection
//! (GUCs, prepared statements, LISTEN, temp objects, advisory locks) — see
//! [`scan_statements`] and [`SqlEffects`].
//!
//! It owns only the SQL lexer (strings, identifiers, dollar quotes, comments,
//! semicolons: "sql-syntax-lexical" in the PostgreSQL docs) and the keyword
//! rules on top of it. It must not parse SQL beyond the first few tokens of a
//! statement, must not allocate on the hot path (every client query passes
//! here), and must never panic on malformed input: an unterminated string or
//! comment simply runs to the end of the text.
//!
//! The flags err on the side of "yes": a false positive costs the relay one
//! extra capture query, a false negative lets state leak to another client.
//! What no text scan can see — a function or procedure that calls
//! `set_config` internally — is out of reach by design; `DO` blocks are
//! treated as possibly changing GUCs for that reason.

/// What a SQL string may do to session state. All `false` for ordinary
/// queries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqlEffects {
    /// Non-empty statements in the string.
    pub statements: u32,
    /// Some statement may change a session-level GUC: `SET` (not `SET LOCAL`,
    /// `SET TRANSACTION`, `SET CONSTRAINTS`), `RESET`, `DISCARD`, `DO`, or a
    /// call to `set_config` anywhere.
    pub gucs: bool,
    /// A statement names a custom (dotted) GUC, or calls `set_config`: list
    /// the names with [`custom_guc_names`] so the capture can ask for them
    /// (`pg_settings` does not show placeholder GUCs).
    pub custom_gucs: bool,
    /// `PREPARE` (not `PREPARE TRANSACTION`) or `DEALLOCATE`.
    pub prepared_sql: bool,
    /// `DEALLOCATE [PREPARE] ALL` or `DISCARD ALL`.
    pub deallocate_all: bool,
    /// `DISCARD ALL`: besides GUCs and prepared statements it also runs
    /// `UNLISTEN *`, releases advisory locks and drops temp objects.
    pub discard_all: bool,
    /// `LISTEN` or `UNLISTEN`.
    pub listen: bool,
    /// `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ...`, `... INTO TEMP ...`,
    /// `DECLARE ... WITH HOLD`, or `LOAD`.
    pub temp_or_hold: bool,
    /// A call to a session-level advisory lock function
    /// (`pg_advisory_lock[_shared]`, `pg_try_advisory_lock[_shared]`).
    pub advisory_lock: bool,
    /// A call to `pg_advisory_unlock[_shared]` or `pg_advisory_unlock_all`.
    pub advisory_unlock: bool,
    /// `SET [SESSION] pgdog.pin TO|= true|on|1|yes`.
    pub pin: bool,
    /// `SET [SESSION] pgdog.pin TO|= false|off|0|no|DEFAULT` or
    /// `RESET pgdog.pin`.
    pub unpin: bool,
}

/// Scans `sql` (one simple Query string, possibly several statements) in one
/// pass without allocating.
pub fn scan_statements(sql: &[u8]) -> SqlEffects {
    let mut effects = SqlEffects::default();
    let mut lexer = Lexer::new(sql);
    let mut head = Head::default();
    let mut previous = Token::Semicolon;
    loop {
        let token = lexer.next_token();
        match token {
            None | Some(Token::Semicolon) => {
                if head.len > 0 {
                    effects.statements += 1;
                    classify(&head, &mut effects);
                }
                head = Head::default();
                previous = Token::Semicolon;
                if token.is_none() {
                    return effects;
                }
            }
            Some(token) => {
                head.push(token);
                if let Token::Word(word) = token {
                    note_anywhere_word(previous, word, &mut effects);
                }
                previous = token;
            }
        }
    }
}

/// Appends to `out` the lowercased names of custom (dotted) GUCs that `sql`
/// names as the target of `SET`/`RESET` or as the literal first argument of
/// `set_config(...)`. Names already in `out` are not repeated. Allocates; call
/// it only when [`SqlEffects::custom_gucs`] is set.
pub fn custom_guc_names(sql: &[u8], out: &mut Vec<String>) {
    let mut lexer = Lexer::new(sql);
    let mut head = Head::default();
    // 0: nothing; 1: saw set_config; 2: saw set_config(
    let mut set_config_state = 0u8;
    loop {
        let token = lexer.next_token();
        match token {
            None | Some(Token::Semicolon) => {
                if let Some(start) = guc_name_start(&head) {
                    if let Some(name) = qualified_name(&head.tokens[start..head.len]) {
                        push_custom(out, name.text());
                    }
                }
                head = Head::default();
                set_config_state = 0;
                if token.is_none() {
                    return;
                }
            }
            Some(token) => {
                head.push(token);
                set_config_state = match (set_config_state, token) {
                    (_, Token::Word(w)) if w.eq_ignore_ascii_case(b"set_config") => 1,
                    (1, Token::Open) => 2,
                    (2, Token::Str { body, escaped }) => {
                        push_custom(out, unescape_literal(body, escaped));
                        0
                    }
                    _ => 0,
                };
            }
        }
    }
}

fn push_custom(out: &mut Vec<String>, name: String) {
    let name = name.to_ascii_lowercase();
    if name.contains('.') && !name.contains('\0') && !out.contains(&name) {
        out.push(name);
    }
}

/// The text of a string literal body: `''` is one quote; in `E'...'` strings
/// a backslash takes the next character literally (enough for names; octal
/// and unicode escapes are not decoded).
fn unescape_literal(body: &[u8], escaped: bool) -> String {
    let mut bytes = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if (byte == b'\'' || (escaped && byte == b'\\')) && i + 1 < body.len() {
            bytes.push(body[i + 1]);
            i += 2;
        } else {
            bytes.push(byte);
            i += 1;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Words that matter wherever they appear: function names and two-word
/// phrases (`INTO TEMP`, `WITH HOLD`).
fn note_anywhere_word(previous: Token<'_>, word: &[u8], effects: &mut SqlEffects) {
    // Cheap length filter first: ordinary identifiers rarely pass it.
    match word.len() {
        4 | 9 => {
            if let Token::Word(prev) = previous {
                let temp = eq(word, "temp") || eq(word, "temporary");
                if (temp && eq(prev, "into")) || (eq(word, "hold") && eq(prev, "with")) {
                    effects.temp_or_hold = true;
                }
            }
        }
        10 if eq(word, "set_config") => {
            effects.gucs = true;
            effects.custom_gucs = true;
        }
        16..=27 if word[0] | 0x20 == b'p' => {
            const LOCKS: [&str; 4] = [
                "pg_advisory_lock",
                "pg_advisory_lock_shared",
                "pg_try_advisory_lock",
                "pg_try_advisory_lock_shared",
            ];
            const UNLOCKS: [&str; 3] = [
                "pg_advisory_unlock",
                "pg_advisory_unlock_shared",
                "pg_advisory_unlock_all",
            ];
            if LOCKS.iter().any(|name| eq(word, name)) {
                effects.advisory_lock = true;
            } else if UNLOCKS.iter().any(|name| eq(word, name)) {
                effects.advisory_unlock = true;
            }
        }
        _ => {}
    }
}

/// Applies the first-keyword rules to one statement.
fn classify(head: &Head<'_>, effects: &mut SqlEffects) {
    let first = head.word(0);
    if eq(first, "set") {
        classify_set(head, effects);
    } else if eq(first, "reset") {
        effects.gucs = true;
        classify_guc_target(head, 1, effects, false);
    } else if eq(first, "discard") {
        effects.gucs = true;
        if eq(head.word(1), "all") {
            effects.discard_all = true;
            effects.deallocate_all = true;
        }
    } else if eq(first, "do") {
        effects.gucs = true;
    } else if eq(first, "prepare") {
        effects.prepared_sql |= !eq(head.word(1), "transaction");
    } else if eq(first, "deallocate") {
        effects.prepared_sql = true;
        let all_at = if eq(head.word(1), "prepare") { 2 } else { 1 };
        effects.deallocate_all |= eq(head.word(all_at), "all");
    } else if eq(first, "listen") || eq(first, "unlisten") {
        effects.listen = true;
    } else if eq(first, "create") {
        let mut i = 1;
        while ["or", "replace", "global", "local"]
            .iter()
            .any(|skip| eq(head.word(i), skip))
        {
            i += 1;
        }
        effects.temp_or_hold |= eq(head.word(i), "temp") || eq(head.word(i), "temporary");
    } else if eq(first, "load") {
        effects.temp_or_hold = true;
    }
}

/// `SET ...`: everything but `SET LOCAL`, `SET TRANSACTION` and
/// `SET CONSTRAINTS` outlives the transaction ("sql-set" in the docs).
fn classify_set(head: &Head<'_>, effects: &mut SqlEffects) {
    let second = head.word(1);
    if ["local", "transaction", "constraints"]
        .iter()
        .any(|scoped| eq(second, scoped))
    {
        return;
    }
    effects.gucs = true;
    let name_at = if eq(second, "session") { 2 } else { 1 };
    classify_guc_target(head, name_at, effects, true);
}

/// Looks at the GUC name starting at `head[at]`: dotted names are custom,
/// `pgdog.pin` pins or unpins.
fn classify_guc_target(head: &Head<'_>, at: usize, effects: &mut SqlEffects, is_set: bool) {
    let Some(name) = qualified_name(&head.tokens[at.min(head.len)..head.len]) else {
        return;
    };
    if !name.dotted {
        return;
    }
    effects.custom_gucs = true;
    if !name.is_pgdog_pin() {
        return;
    }
    if !is_set {
        effects.unpin = true;
        return;
    }
    let value_at = at + name.tokens;
    let assign = head.get(value_at);
    let is_assign = matches!(assign, Some(Token::Equals))
        || matches!(assign, Some(Token::Word(w)) if eq(w, "to"));
    if !is_assign {
        return;
    }
    let value: &[u8] = match head.get(value_at + 1) {
        Some(Token::Word(w) | Token::Number(w) | Token::QuotedIdent(w)) => w,
        Some(Token::Str { body, .. }) => body,
        _ => return,
    };
    if ["true", "on", "1", "yes", "t", "y"]
        .iter()
        .any(|v| eq(value, v))
    {
        effects.pin = true;
    } else if ["false", "off", "0", "no", "f", "n", "default"]
        .iter()
        .any(|v| eq(value, v))
    {
        effects.unpin = true;
    }
}

/// Where the GUC name of a `SET`/`RESET` statement starts, if it is one.
fn guc_name_start(head: &Head<'_>) -> Option<usize> {
    let first = head.word(0);
    if eq(first, "reset") {
        return Some(1);
    }
    if !eq(first, "set") {
        return None;
    }
    let second = head.word(1);
    if eq(second, "session") || eq(second, "local") {
        Some(2)
    } else {
        Some(1)
    }
}

/// A GUC name as written: `a`, `a.b`, `"A".b`.
struct QualifiedName<'a> {
    parts: [&'a [u8]; 3],
    count: usize,
    /// Tokens it spans (words and dots).
    tokens: usize,
    dotted: bool,
}

impl QualifiedName<'_> {
    fn is_pgdog_pin(&self) -> bool {
        self.count == 2 && eq(self.parts[0], "pgdog") && eq(self.parts[1], "pin")
    }

    fn text(&self) -> String {
        let parts: Vec<String> = self.parts[..self.count]
            .iter()
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        parts.join(".")
    }
}

fn qualified_name<'a>(tokens: &[Token<'a>]) -> Option<QualifiedName<'a>> {
    let mut name = QualifiedName {
        parts: [b""; 3],
        count: 0,
        tokens: 0,
        dotted: false,
    };
    loop {
        let part = match tokens.get(name.tokens) {
            Some(Token::Word(w) | Token::QuotedIdent(w)) => *w,
            _ => return None,
        };
        if name.count < name.parts.len() {
            name.parts[name.count] = part;
            name.count += 1;
        }
        name.tokens += 1;
        if !matches!(tokens.get(name.tokens), Some(Token::Dot)) {
            return Some(name);
        }
        name.dotted = true;
        name.tokens += 1;
    }
}

fn eq(word: &[u8], keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword.as_bytes())
}

/// The first tokens of a statement: all the keyword rules need.
#[derive(Default)]
struct Head<'a> {
    tokens: [Token<'a>; HEAD_TOKENS],
    len: usize,
}

/// `SET SESSION pgdog . pin = value` is 7 tokens.
const HEAD_TOKENS: usize = 8;

impl<'a> Head<'a> {
    fn push(&mut self, token: Token<'a>) {
        if self.len < HEAD_TOKENS {
            self.tokens[self.len] = token;
            self.len += 1;
        }
    }

    fn get(&self, i: usize) -> Option<Token<'a>> {
        self.tokens[..self.len].get(i).copied()
    }

    /// The unquoted word at `i`, or empty (which matches no keyword).
    fn word(&self, i: usize) -> &'a [u8] {
        match self.get(i) {
            Some(Token::Word(w)) => w,
            _ => b"",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Token<'a> {
    /// An unquoted identifier or keyword.
    Word(&'a [u8]),
    /// The body of a `"..."` identifier (`""` left as is).
    QuotedIdent(&'a [u8]),
    /// The body of a `'...'` (or `E'...'` when `escaped`) string.
    Str {
        body: &'a [u8],
        escaped: bool,
    },
    /// A numeric literal.
    Number(&'a [u8]),
    Semicolon,
    Dot,
    Equals,
    Open,
    /// Any other operator or punctuation, or a dollar-quoted string.
    #[default]
    Other,
}

/// Tokens of SQL text, without comments and whitespace.
struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

/// Can `byte` start an unquoted SQL identifier ("sql-syntax-identifiers")?
pub(crate) fn is_ident_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

/// Can `byte` continue an unquoted SQL identifier?
pub(crate) fn is_ident_char(byte: u8) -> bool {
    is_ident_start(byte) || byte.is_ascii_digit() || byte == b'$'
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8]) -> Lexer<'a> {
        Lexer { sql, pos: 0 }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.sql.get(self.pos + ahead).copied()
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        self.skip_blanks();
        let byte = self.peek(0)?;
        let start = self.pos;
        self.pos += 1;
        let token = match byte {
            b';' => Token::Semicolon,
            b'.' if !self.peek(0).is_some_and(|b| b.is_ascii_digit()) => Token::Dot,
            b'=' => Token::Equals,
            b'(' => Token::Open,
            b'\'' => self.string(false),
            b'"' => Token::QuotedIdent(self.quoted(b'"')),
            b'$' => self.dollar(),
            b'0'..=b'9' | b'.' => {
                while self
                    .peek(0)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                {
                    self.pos += 1;
                }
                Token::Number(&self.sql[start..self.pos])
            }
            _ if is_ident_start(byte) => {
                while self.peek(0).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                let word = &self.sql[start..self.pos];
                if self.peek(0) == Some(b'\'') && word.eq_ignore_ascii_case(b"e") {
                    self.pos += 1;
                    self.string(true)
                } else {
                    Token::Word(word)
                }
            }
            _ => Token::Other,
        };
        Some(token)
    }

    /// Skips whitespace, `-- ...` and nested `/* ... */` comments.
    ///
    /// Whitespace and line ends are the server's, not Rust's: vertical tab
    /// (0x0b) is a space to the server's lexer (PostgreSQL 16 on) and a
    /// `--` comment ends at `\r` as well as `\n`. Reading either as anything
    /// else would hide the statement after it, a false negative.
    fn skip_blanks(&mut self) {
        while let Some(byte) = self.peek(0) {
            if byte.is_ascii_whitespace() || byte == 0x0b {
                self.pos += 1;
            } else if byte == b'-' && self.peek(1) == Some(b'-') {
                while self.peek(0).is_some_and(|b| b != b'\n' && b != b'\r') {
                    self.pos += 1;
                }
            } else if byte == b'/' && self.peek(1) == Some(b'*') {
                self.block_comment();
            } else {
                return;
            }
        }
    }

    fn block_comment(&mut self) {
        let mut depth = 0usize;
        while let Some(byte) = self.peek(0) {
            if byte == b'/' && self.peek(1) == Some(b'*') {
                depth += 1;
                self.pos += 2;
            } else if byte == b'*' && self.peek(1) == Some(b'/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    /// After the opening quote of a string; `escaped` for `E'...'`.
    fn string(&mut self, escaped: bool) -> Token<'a> {
        let start = self.pos;
        while let Some(byte) = self.peek(0) {
            if escaped && byte == b'\\' {
                self.pos += 2;
            } else if byte == b'\'' {
                if self.peek(1) == Some(b'\'') {
                    self.pos += 2;
                } else {
                    let body = &self.sql[start..self.pos];
                    self.pos += 1;
                    return Token::Str { body, escaped };
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.sql.len();
        Token::Str {
            body: &self.sql[start..],
            escaped,
        }
    }

    /// After the opening `quote`: the body up to the closing one, doubled
    /// quotes included.
    fn quoted(&mut self, quote: u8) -> &'a [u8] {
        let start = self.pos;
        while let Some(byte) = self.peek(0) {
            if byte == quote {
                if self.peek(1) == Some(quote) {
                    self.pos += 2;
                    continue;
                }
                let body = &self.sql[start..self.pos];
                self.pos += 1;
                return body;
            }
            self.pos += 1;
        }
        &self.sql[start..]
    }

    /// After a `$` that starts a token: a dollar-quoted string `$tag$...$tag$`
    /// (the tag may be empty and cannot start with a digit), or a parameter
    /// (`$1`) / stray `$`.
    fn dollar(&mut self) -> Token<'a> {
        let tag_start = self.pos - 1;
        let mut end = self.pos;
        if self.sql.get(end).copied().is_some_and(is_ident_start) {
            while self
                .sql
                .get(end)
                .copied()
                .is_some_and(|b| is_ident_char(b) && b != b'$')
            {
                end += 1;
            }
        }
        if self.sql.get(end) != Some(&b'$') {
            return Token::Other;
        }
        let tag = &self.sql[tag_start..=end];
        let body_start = end + 1;
        self.pos = match find(&self.sql[body_start..], tag) {
            Some(at) => body_start + at + tag.len(),
            None => self.sql.len(),
        };
        Token::Other
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags by letter: g gucs, c custom_gucs, p prepared_sql, D deallocate_all,
    /// A discard_all, l listen, t temp_or_hold, L advisory_lock,
    /// U advisory_unlock, P pin, u unpin.
    fn flags(e: &SqlEffects) -> String {
        [
            (e.gucs, 'g'),
            (e.custom_gucs, 'c'),
            (e.prepared_sql, 'p'),
            (e.deallocate_all, 'D'),
            (e.discard_all, 'A'),
            (e.listen, 'l'),
            (e.temp_or_hold, 't'),
            (e.advisory_lock, 'L'),
            (e.advisory_unlock, 'U'),
            (e.pin, 'P'),
            (e.unpin, 'u'),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect()
    }

    const CASES: &[(&str, &str, u32)] = &[
        // (sql, flags, statements)
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            "",
            1,
        ),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 3;",
            "",
            1,
        ),
        (
            "INSERT INTO pgbench_history (tid, bid) VALUES (1, 2)",
            "",
            1,
        ),
        ("", "", 0),
        (" ; ;; -- nothing\n", "", 0),
        ("SELECT 'set_config'", "", 1),
        ("SELECT \"set_config\"", "", 1),
        ("/* SET x */ SELECT 1", "", 1),
        ("/* a /* nested SET */ still comment */ SELECT 1", "", 1),
        ("-- SET x = 1\nSELECT 1", "", 1),
        // Found by tests/fuzz (sql): the server ends a `--` comment at a
        // carriage return too, and takes a vertical tab for a space.
        ("-- c\rSET a = 1", "g", 1),
        ("\x0bSET\x0ba.b = 1", "gc", 1),
        ("\x0b\x0bLISTEN chan", "l", 1),
        ("SELECT 1; SET a = 1", "g", 2),
        ("SELECT $$;SET$$", "", 1),
        ("SELECT $tag$ $$ ; SET a=1 $tag$", "", 1),
        ("SELECT $1::int; SET a=1", "g", 2),
        ("set local x=1", "", 1),
        ("SET LOCAL a.b = 1", "", 1),
        ("SeT    search_path to a", "g", 1),
        ("set search_path = \"$user\", public", "g", 1),
        ("SET SESSION work_mem = '8MB'", "g", 1),
        ("SET TIME ZONE 'UTC'", "g", 1),
        ("SET NAMES 'LATIN1'", "g", 1),
        ("SET ROLE r1", "g", 1),
        ("SET SESSION AUTHORIZATION r2", "g", 1),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "g",
            1,
        ),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "", 1),
        ("SET CONSTRAINTS ALL DEFERRED", "", 1),
        ("RESET ALL", "g", 1),
        ("reset search_path", "g", 1),
        ("DISCARD TEMP", "g", 1),
        ("DISCARD ALL", "gDA", 1),
        ("select set_config('a.b','1',false)", "gc", 1),
        ("SELECT pg_catalog.SET_CONFIG('x', 'y', true)", "gc", 1),
        ("SET myapp.tenant = 42", "gc", 1),
        ("SET \"MyApp\".\"Tenant\" TO 'x'", "gc", 1),
        ("RESET myapp.tenant", "gc", 1),
        ("SET pgdog.pin TO true", "gcP", 1),
        ("set pgdog.pin = on", "gcP", 1),
        ("SET pgdog.pin = '1'", "gcP", 1),
        ("SET pgdog.pin TO off", "gcu", 1),
        ("SET pgdog.pin = 0", "gcu", 1),
        ("RESET pgdog.pin", "gcu", 1),
        ("PREPARE q(int) AS SELECT $1", "p", 1),
        ("PREPARE TRANSACTION 'tx1'", "", 1),
        ("DEALLOCATE q", "p", 1),
        ("deallocate all", "pD", 1),
        ("DEALLOCATE PREPARE ALL", "pD", 1),
        ("EXECUTE q(1)", "", 1),
        ("LISTEN chan", "l", 1),
        ("UNLISTEN *", "l", 1),
        ("NOTIFY chan, 'LISTEN'", "", 1),
        ("CREATE TEMP TABLE t (id int)", "t", 1),
        ("create temporary view v as select 1", "t", 1),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "t", 1),
        ("CREATE GLOBAL TEMPORARY TABLE t (id int)", "t", 1),
        ("CREATE TABLE temp (id int)", "", 1),
        ("CREATE UNLOGGED TABLE t (id int)", "", 1),
        ("SELECT 1 AS a INTO TEMP t", "t", 1),
        ("INSERT INTO temp_table VALUES (1)", "", 1),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "t", 1),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", "", 1),
        ("LOAD 'auto_explain'", "t", 1),
        ("SELECT pg_advisory_lock(1)", "L", 1),
        ("SELECT PG_TRY_ADVISORY_LOCK(1, 2)", "L", 1),
        ("SELECT pg_advisory_lock_shared(1)", "L", 1),
        ("SELECT pg_advisory_xact_lock(1)", "", 1),
        ("SELECT pg_try_advisory_xact_lock(1)", "", 1),
        ("SELECT pg_advisory_unlock(1)", "U", 1),
        ("SELECT pg_advisory_unlock_all()", "U", 1),
        ("SELECT 'pg_advisory_lock(1)'", "", 1),
        ("SELECT E'it\\'s; SET a=1'", "", 1),
        ("SELECT 'it''s; SET a=1'", "", 1),
        ("SELECT 'a\\'; SET a = 1", "g", 2),
        ("SELECT \"weird\"\";SET\"", "", 1),
        ("DO $$ BEGIN PERFORM 1; END $$", "g", 1),
        ("BEGIN; SET work_mem = '1MB'; COMMIT", "g", 3),
        ("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT", "", 3),
        ("ALTER ROLE r SET work_mem = '1MB'", "", 1),
        (
            "CREATE FUNCTION f() RETURNS int SET search_path = a AS 'select 1' LANGUAGE sql",
            "",
            1,
        ),
        ("SELECT 1 /* unterminated", "", 1),
        ("SELECT 'unterminated", "", 1),
        ("SELECT $x$ unterminated", "", 1),
        ("SELECT $", "", 1),
    ];

    #[test]
    fn scan_table() {
        assert!(CASES.len() >= 40);
        for (sql, want, statements) in CASES {
            let effects = scan_statements(sql.as_bytes());
            assert_eq!(flags(&effects), *want, "flags of {sql:?}");
            assert_eq!(effects.statements, *statements, "statements in {sql:?}");
        }
    }

    #[test]
    fn never_panics_on_any_prefix() {
        for (sql, _, _) in CASES {
            for end in 0..=sql.len() {
                scan_statements(&sql.as_bytes()[..end]);
                custom_guc_names(&sql.as_bytes()[..end], &mut Vec::new());
            }
        }
        scan_statements(b"\xff\xfe'\0\"$$\\");
    }

    #[test]
    fn custom_names_from_set_reset_and_set_config() {
        let mut names = Vec::new();
        custom_guc_names(
            b"SET app.Tenant = 1; SET LOCAL a.b TO 2; RESET \"X\".y; \
              SELECT set_config('c.d', '1', false), set_config(E'e\\'.f', 'v', false); \
              SET work_mem = 1; SELECT set_config('search_path', 'a', false); \
              SELECT set_config(name, 'v', false) FROM t; SET app.tenant = 2",
            &mut names,
        );
        assert_eq!(names, ["app.tenant", "a.b", "x.y", "c.d", "e'.f"]);
    }
}
