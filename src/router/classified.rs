//! The answer the classifier gives for one simple-protocol query string or
//! one prepared statement: [`Classified`] and the small enums it is made of.
//!
//! Everything here is `Copy` plain data so that a cache hit hands out a
//! value without allocating. Text the answer refers to (a sharding-key hint)
//! is a [`TextSpan`] into the statement text, which the caller still holds:
//! the cache is keyed by that very text. Nothing here decides a route; the
//! relay combines these facts with `read_write_strategy`, `read_write_split`
//! and the session's state.

/// What a statement does to data, for read/write routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    /// May run on a replica.
    Read,
    /// Must run on the primary.
    Write,
}

/// Where one classification came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Settled by the first keyword alone; pg_query was not called.
    FastPath,
    /// Settled from pg_query's parse tree.
    Parsed,
    /// pg_query rejected the text (a syntax error, or a NUL byte). The intent
    /// is then [`Intent::Write`]: the primary answers with the real error, or
    /// runs it if the text is valid for a newer server than our parser.
    Unparsable,
}

/// A transaction's access mode as written in `BEGIN` / `START TRANSACTION` /
/// `SET TRANSACTION` ("sql-set-transaction" in the PostgreSQL docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// No `READ ONLY` / `READ WRITE` given: the server's default applies.
    Default,
    /// `READ ONLY`.
    ReadOnly,
    /// `READ WRITE`.
    ReadWrite,
}

/// Transaction control ("sql-commands" in the PostgreSQL docs). Only the
/// first statement of a multi-statement string is described: the relay
/// learns how the string left the transaction from ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transaction {
    /// `BEGIN` or `START TRANSACTION`.
    Begin(Access),
    /// `SET TRANSACTION ...` (also `SET transaction_read_only = ...` and
    /// `SET TRANSACTION SNAPSHOT`, which reads as `Default`): sets the mode
    /// of the transaction already open.
    SetAccess(Access),
    /// `COMMIT` / `END`; `chain` for `AND CHAIN`.
    Commit { chain: bool },
    /// `ROLLBACK` / `ABORT`; `chain` for `AND CHAIN`.
    Rollback { chain: bool },
    /// `SAVEPOINT name`.
    Savepoint,
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint,
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackToSavepoint,
    /// `PREPARE TRANSACTION 'gid'` (a write).
    PrepareTransaction,
    /// `COMMIT PREPARED 'gid'` (a write).
    CommitPrepared,
    /// `ROLLBACK PREPARED 'gid'` (a write).
    RollbackPrepared,
}

/// A server role a hint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

/// A byte range of the classified statement text (`start..start + len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TextSpan {
    pub start: u32,
    pub len: u32,
}

impl TextSpan {
    /// The spanned text of `sql`, which must be the text that was classified.
    /// `None` if the span does not fit `sql` (a different text was passed).
    pub fn slice<'a>(&self, sql: &'a str) -> Option<&'a str> {
        let start = usize::try_from(self.start).ok()?;
        let end = start.checked_add(usize::try_from(self.len).ok()?)?;
        sql.get(start..end)
    }
}

/// Routing hints written in comments, PgDog's syntax
/// (`/* pgdog_role: primary */`, `/* pgdog_shard: 1 */`,
/// `/* pgdog_sharding_key: 1234 */`), anywhere in the text. Block and line
/// comments both count; comments inside string literals do not. When a key
/// appears more than once the first one wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hints {
    /// `pgdog_role: primary|replica`.
    pub role: Option<Role>,
    /// `pgdog_shard: N` (a shard number, not yet checked against the cluster).
    pub shard: Option<u32>,
    /// `pgdog_sharding_key: value`: the value's bytes in the statement text,
    /// without surrounding quotes.
    pub sharding_key: Option<TextSpan>,
}

/// A `SET` / `RESET` of the `pgdog.role` parameter (PgDog's manual routing
/// for a whole connection or, with `LOCAL`, the current transaction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleSetting {
    /// `SET [LOCAL] pgdog.role TO|= 'primary'|'replica'`.
    Set { role: Role, local: bool },
    /// `SET [LOCAL] pgdog.role` to any other value: the relay decides
    /// whether that is an error.
    Invalid { local: bool },
    /// `RESET pgdog.role`, `SET pgdog.role TO DEFAULT` (the same thing in
    /// PostgreSQL), `RESET ALL`, `DISCARD ALL`. `local` only for
    /// `SET LOCAL pgdog.role TO DEFAULT`.
    Reset { local: bool },
}

/// The classification of one query string (one or more statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classified {
    /// `Write` if any statement writes, or the text could not be parsed.
    pub intent: Intent,
    /// Fast path, parse tree, or unparsable.
    pub source: Source,
    /// Non-empty statements in the text (0 for an empty or comment-only
    /// query). A lexical count when the fast path answered.
    pub statements: u32,
    /// Transaction control done by the first statement.
    pub transaction: Option<Transaction>,
    /// Some statement of the text, the first or a later one, is a COMMIT or
    /// ROLLBACK (END, ABORT; not to a savepoint). False when unparsable.
    pub ends_transaction: bool,
    /// Every statement is a session command that any server can answer the
    /// same way: `SET`/`RESET` of a session parameter, `SHOW`, `DISCARD`,
    /// `DEALLOCATE`. (`SET TRANSACTION` is transaction control instead.)
    pub session_command: bool,
    /// The last `SET`/`RESET pgdog.role` in the text, if any.
    pub role_setting: Option<RoleSetting>,
    /// Comment hints.
    pub hints: Hints,
}

impl Classified {
    /// True when the statement must run on the primary by its own content.
    pub fn is_write(&self) -> bool {
        self.intent == Intent::Write
    }
}
