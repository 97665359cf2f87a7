//! Query classification for read/write routing: does a statement need the
//! primary, does it control a transaction, does it carry a routing hint.
//!
//! It owns the classifier ([`classify`]: a one-pass lexer, a first-keyword
//! fast path, pg_query's parse tree for the rest) and the per-core
//! [`QueryCache`] of its answers. It is pure logic: no I/O, no clocks, no
//! shared state, and it must not pick a server: the relay combines a
//! [`Classified`] with `read_write_strategy`, `read_write_split`, the
//! session's `pgdog.role` and the cluster's health.
//!
//! Rules, in short: `INSERT/UPDATE/DELETE/MERGE`, all DDL, `COPY FROM`,
//! locking `SELECT`s, data-modifying CTEs, `SELECT INTO`, calls to
//! `nextval`/`setval`/advisory-lock functions (and a few more, see
//! `lex::is_write_function`), `CALL`, `DO`, maintenance, `LOCK`,
//! `LISTEN/NOTIFY/UNLISTEN`, two-phase commit and anything unknown or
//! unparsable are writes. A plain `SELECT` of any other function is a read,
//! as in PgDog. `EXPLAIN`, `PREPARE`, `DECLARE` classify their statement; a
//! multi-statement string writes if any statement does.

mod cache;
mod classified;
mod classify;
mod hints;
mod lex;
pub mod plans;
pub(crate) mod tree;

pub mod shard;

pub use cache::{
    QueryCache, QueryCacheStats, QUERY_CACHE_LIMIT_DEFAULT, QUERY_CACHE_STATEMENT_BYTES_MAX,
};
pub use classified::{
    Access, Classified, Hints, Intent, Role, RoleSetting, Source, TextSpan, Transaction,
};
pub use classify::classify;
pub(crate) use lex::first_word;
