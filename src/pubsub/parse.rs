//! Recognises a statement that is exactly one `LISTEN channel`, `UNLISTEN
//! channel` or `UNLISTEN *`, and quotes a channel name for the listener
//! connection's own statements.
//!
//! Owns the identifier rules the channel name follows ("sql-syntax-lexical" in
//! the PostgreSQL docs, section 4.1.1): an unquoted name folds ASCII letters to
//! lower case, a quoted one keeps its case with `""` standing for `"`, and
//! either is truncated to `NAMEDATALEN - 1` (63) bytes on a character boundary,
//! as the server does, so a name matches the `channel` field of the
//! NotificationResponse the server later sends.
//!
//! Must not: guess. Anything it is not sure of (several statements, a `U&"..."`
//! name, a reserved keyword used as a name, an empty quoted name, bytes that
//! are not UTF-8) is `None`, and the statement goes to the server, which
//! answers it or reports the error as Postgres would.

use crate::session::sql_scan::{is_ident_char, is_ident_start};

/// One LISTEN-family statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenCommand {
    /// `LISTEN channel`.
    Listen(String),
    /// `UNLISTEN channel`.
    Unlisten(String),
    /// `UNLISTEN *`.
    UnlistenAll,
}

impl ListenCommand {
    /// The CommandComplete tag Postgres sends for this statement
    /// ("protocol-message-formats", CommandComplete).
    pub fn tag(&self) -> &'static str {
        match self {
            ListenCommand::Listen(_) => "LISTEN",
            ListenCommand::Unlisten(_) | ListenCommand::UnlistenAll => "UNLISTEN",
        }
    }
}

/// `NAMEDATALEN - 1`: the longest identifier Postgres keeps, in bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Parses `sql` when it is a single LISTEN or UNLISTEN statement (with
/// optional comments, whitespace and trailing semicolons); `None` for
/// anything else.
pub fn parse_listen(sql: &[u8]) -> Option<ListenCommand> {
    let mut commands = parse_listens(sql)?;
    if commands.len() != 1 {
        return None;
    }
    commands.pop()
}

/// A simple Query made only of LISTEN, UNLISTEN and UNLISTEN * statements,
/// in order; `None` when anything else is in it (or nothing is).
pub fn parse_listens(sql: &[u8]) -> Option<Vec<ListenCommand>> {
    let mut lexer = Lexer { sql, pos: 0 };
    let mut commands = Vec::new();
    loop {
        let verb = match lexer.next() {
            None => break,
            Some(Token::Semicolon) => continue,
            Some(Token::Word(verb)) => verb,
            Some(_) => return None,
        };
        let command = if verb.eq_ignore_ascii_case(b"listen") {
            ListenCommand::Listen(channel(lexer.next()?)?)
        } else if verb.eq_ignore_ascii_case(b"unlisten") {
            match lexer.next()? {
                Token::Star => ListenCommand::UnlistenAll,
                token => ListenCommand::Unlisten(channel(token)?),
            }
        } else {
            return None;
        };
        commands.push(command);
        match lexer.next() {
            None => break,
            Some(Token::Semicolon) => {}
            Some(_) => return None,
        }
    }
    (!commands.is_empty()).then_some(commands)
}

/// Quotes `name` as a delimited identifier: `"` around it, `"` inside doubled.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The channel a name token stands for, folded and truncated as the server
/// would.
fn channel(token: Token<'_>) -> Option<String> {
    let name = match token {
        Token::Word(word) => {
            let word = std::str::from_utf8(word).ok()?;
            if is_reserved(word) {
                return None; // a syntax error in Postgres: let it say so
            }
            word.to_ascii_lowercase()
        }
        Token::Quoted(body) => {
            let body = std::str::from_utf8(body).ok()?;
            if body.is_empty() {
                return None; // "zero-length delimited identifier"
            }
            body.replace("\"\"", "\"")
        }
        _ => return None,
    };
    Some(truncate_identifier(name))
}

fn truncate_identifier(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut end = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

/// Keywords that cannot be a channel name without quotes: the "reserved" and
/// "reserved (can be function or type)" columns of the PostgreSQL docs'
/// keyword table ("sql-keywords-appendix"), which the grammar's `ColId`
/// excludes.
fn is_reserved(word: &str) -> bool {
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "binary",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "placing",
        "primary",
        "references",
        "returning",
        "right",
        "select",
        "session_user",
        "similar",
        "some",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
    ];
    RESERVED.iter().any(|k| word.eq_ignore_ascii_case(k))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An unquoted identifier or keyword, as written.
    Word(&'a [u8]),
    /// The body of a `"..."` identifier, `""` escapes still doubled.
    Quoted(&'a [u8]),
    Star,
    Semicolon,
    /// Anything else, including an unterminated quoted identifier.
    Other,
}

/// Just enough of the SQL lexer for one LISTEN statement: whitespace, `--`
/// and (nested) `/* */` comments, identifiers, `*` and `;`.
struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.sql.get(self.pos + ahead).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_blanks();
        let byte = self.peek(0)?;
        let start = self.pos;
        self.pos += 1;
        let token = match byte {
            b';' => Token::Semicolon,
            b'*' => Token::Star,
            b'"' => self.quoted(),
            // U&"..." (Unicode escapes) is left to the server.
            b'u' | b'U' if self.peek(0) == Some(b'&') => Token::Other,
            _ if is_ident_start(byte) => {
                while self.peek(0).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                Token::Word(&self.sql[start..self.pos])
            }
            _ => Token::Other,
        };
        Some(token)
    }

    /// After the opening `"`: the body up to the closing one.
    fn quoted(&mut self) -> Token<'a> {
        let start = self.pos;
        loop {
            match self.peek(0) {
                None => return Token::Other,
                Some(b'"') if self.peek(1) == Some(b'"') => self.pos += 2,
                Some(b'"') => {
                    let body = &self.sql[start..self.pos];
                    self.pos += 1;
                    return Token::Quoted(body);
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn skip_blanks(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() || b == 0x0b => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.peek(0).is_some_and(|b| b != b'\n' && b != b'\r') {
                        self.pos += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment(),
                _ => return,
            }
        }
    }

    /// Block comments nest in Postgres; an unterminated one runs to the end.
    fn skip_block_comment(&mut self) {
        self.pos += 2;
        let mut depth = 1usize;
        while depth > 0 {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return,
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                }
                _ => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(name: &str) -> Option<ListenCommand> {
        Some(ListenCommand::Listen(name.to_owned()))
    }

    fn unlisten(name: &str) -> Option<ListenCommand> {
        Some(ListenCommand::Unlisten(name.to_owned()))
    }

    #[test]
    fn plain_statements() {
        assert_eq!(parse_listen(b"LISTEN chan"), listen("chan"));
        assert_eq!(parse_listen(b"listen Chan_1$x"), listen("chan_1$x"));
        assert_eq!(parse_listen(b"UNLISTEN chan"), unlisten("chan"));
        assert_eq!(
            parse_listen(b"unlisten *"),
            Some(ListenCommand::UnlistenAll)
        );
        assert_eq!(
            parse_listen(b"UnListen\t*;"),
            Some(ListenCommand::UnlistenAll)
        );
    }

    #[test]
    fn quoted_names_keep_case_and_unescape() {
        assert_eq!(parse_listen(br#"LISTEN "Chan""#), listen("Chan"));
        assert_eq!(parse_listen(br#"LISTEN "a""b""#), listen("a\"b"));
        assert_eq!(
            parse_listen(br#"LISTEN "has space;*""#),
            listen("has space;*")
        );
        assert_eq!(parse_listen(br#"LISTEN"x"y"#), None);
        assert_eq!(parse_listen(br#"LISTEN"x""#), listen("x"));
        assert_eq!(parse_listen(br#"UNLISTEN "*""#), unlisten("*"));
        assert_eq!(parse_listen(br#"LISTEN "select""#), listen("select"));
    }

    #[test]
    fn comments_whitespace_and_semicolons() {
        assert_eq!(
            parse_listen(b"  -- why\n LISTEN /* a /* nested */ one */ chan ; ;\n-- end"),
            listen("chan")
        );
        assert_eq!(parse_listen(b"\r\nLISTEN\x0bchan;"), listen("chan"));
        assert_eq!(parse_listen(b"/* unterminated LISTEN chan"), None);
        assert_eq!(parse_listen(b"LISTEN chan /* unterminated"), listen("chan"));
    }

    #[test]
    fn listen_only_queries_are_split_into_commands() {
        let commands = parse_listens(b"LISTEN a; listen \"B;c\" ;UNLISTEN *;").unwrap();
        assert_eq!(
            commands,
            [
                ListenCommand::Listen("a".into()),
                ListenCommand::Listen("B;c".into()),
                ListenCommand::UnlistenAll,
            ]
        );
        // Comments are the lexer's business, as in one statement.
        assert_eq!(
            parse_listens(b"listen a -- comment"),
            Some(vec![ListenCommand::Listen("a".into())])
        );
        for other in [
            &b"LISTEN a; select 1"[..],
            b"begin; listen a",
            b"listen 'a",
            b"",
            b" ; ",
        ] {
            assert_eq!(
                parse_listens(other),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn anything_else_is_none() {
        for sql in [
            &b""[..],
            b";",
            b"LISTEN",
            b"LISTEN ;",
            b"LISTEN *",
            b"LISTEN a b",
            b"LISTEN a.b",
            b"LISTEN a; LISTEN b",
            b"LISTEN a; select 1",
            b"select 1; LISTEN a",
            b"NOTIFY chan",
            b"NOTIFY chan, 'LISTEN x'",
            b"LISTENchan",
            b"LISTEN 1abc",
            b"LISTEN 'chan'",
            b"LISTEN \"\"",
            b"LISTEN \"unterminated",
            b"LISTEN U&\"d\\0061t\"",
            b"LISTEN u&\"x\"",
            b"LISTEN select",
            b"LISTEN TABLE",
            b"UNLISTEN user",
            b"UNLISTEN * *",
            b"UNLISTEN *a",
            b"LISTEN \xff\xfe",
            b"LISTEN \"\xff\"",
        ] {
            assert_eq!(parse_listen(sql), None, "{}", String::from_utf8_lossy(sql));
        }
    }

    #[test]
    fn unreserved_keywords_and_non_ascii_are_names() {
        assert_eq!(parse_listen(b"LISTEN listen"), listen("listen"));
        assert_eq!(parse_listen(b"LISTEN name"), listen("name"));
        assert_eq!(parse_listen("LISTEN Ärger".as_bytes()), listen("Ärger"));
        assert_eq!(parse_listen("LISTEN _été$2".as_bytes()), listen("_été$2"));
    }

    #[test]
    fn long_names_are_truncated_to_63_bytes_on_a_char_boundary() {
        let long = "a".repeat(70);
        assert_eq!(
            parse_listen(format!("LISTEN {long}").as_bytes()),
            listen(&"a".repeat(63))
        );
        // 62 ASCII bytes then a 2-byte character: it does not fit in 63.
        let name = format!("{}é", "b".repeat(62));
        assert_eq!(
            parse_listen(format!("LISTEN \"{name}x\"").as_bytes()),
            listen(&"b".repeat(62))
        );
        let exact = "c".repeat(63);
        assert_eq!(
            parse_listen(format!("UNLISTEN {exact}").as_bytes()),
            unlisten(&exact)
        );
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(quote_ident("chan"), "\"chan\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("Upper Case"), "\"Upper Case\"");
        for name in ["chan", "a\"b", "\"\"", "Ärger", "*"] {
            let sql = format!("LISTEN {}", quote_ident(name));
            assert_eq!(parse_listen(sql.as_bytes()), listen(name));
        }
    }

    #[test]
    fn tags() {
        assert_eq!(ListenCommand::Listen("a".into()).tag(), "LISTEN");
        assert_eq!(ListenCommand::Unlisten("a".into()).tag(), "UNLISTEN");
        assert_eq!(ListenCommand::UnlistenAll.tag(), "UNLISTEN");
    }
}
