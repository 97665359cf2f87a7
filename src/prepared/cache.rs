//! The core's cache of distinct statements: one entry per (query text,
//! parameter types), shared by every client of the core, each with the
//! server-side name it is prepared under and the Parse message that prepares it.
//!
//! Must not: know which server connection has prepared what (`server`) or which
//! client calls a statement what (`client`).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::frame::HEADER_LEN;
use crate::protocol::frontend::FrontendKind;
use crate::router::Classified;

use super::SERVER_NAME_PREFIX;

/// A statement's number within its core; its server-side name derives from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementId(pub u64);

#[derive(Debug)]
pub struct Statement {
    pub id: StatementId,
    /// The name it is prepared under on every server connection of the core.
    pub server_name: Box<str>,
    /// What follows the name in a Parse body: query, parameter count and types.
    /// The cache key.
    tail: Bytes,
    /// A whole message preparing it under `server_name`: a Parse, or for a
    /// statement defined by SQL `PREPARE` a simple Query running `PREPARE`.
    pub parse: Bytes,
    /// Defined by SQL `PREPARE` (`prepared_statements = "full"`): its
    /// parameter types are SQL type names, so only SQL can prepare it again.
    pub defined_by_sql: bool,
    /// Its read/write classification, made the first time a request runs
    /// it on a cluster of several servers and kept: each Bind is routed
    /// without looking at the text again.
    classified: Cell<Option<Classified>>,
}

impl Statement {
    /// The query text (without its NUL), for logs and session-effect scans;
    /// for a statement defined by SQL, what followed the name in `PREPARE`.
    pub fn sql(&self) -> &[u8] {
        if self.defined_by_sql {
            return &self.tail[SQL_KEY_MARK.len()..];
        }
        let end = self.tail.iter().position(|b| *b == 0).unwrap_or(0);
        &self.tail[..end]
    }

    /// Its parameter types as the client declared them (0: unspecified);
    /// none for a statement defined by SQL.
    pub fn param_types(&self) -> Vec<u32> {
        if self.defined_by_sql {
            return Vec::new();
        }
        let Some(end) = self.tail.iter().position(|b| *b == 0) else {
            return Vec::new();
        };
        let rest = &self.tail[end + 1..];
        let count = rest
            .get(..2)
            .map_or(0, |c| usize::from(u16::from_be_bytes([c[0], c[1]])));
        (0..count)
            .filter_map(|n| rest.get(2 + 4 * n..6 + 4 * n))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Its classification: `classify(text)` the first time, kept after.
    /// None when the text is not UTF-8 (the caller treats that as a write).
    pub fn classified(&self, classify: impl FnOnce(&str) -> Classified) -> Option<Classified> {
        if let Some(classified) = self.classified.get() {
            return Some(classified);
        }
        let classified = classify(std::str::from_utf8(self.sql()).ok()?);
        self.classified.set(Some(classified));
        Some(classified)
    }
}

/// Starts the cache key of a statement defined by SQL. A Parse tail starts
/// with query text, which is UTF-8 and so never holds this byte.
const SQL_KEY_MARK: &[u8] = &[0xff];

/// Builds the server-side name of statement `id`.
pub fn server_name(id: StatementId) -> Box<str> {
    format!("{SERVER_NAME_PREFIX}{}", id.0).into_boxed_str()
}

pub struct StatementCache {
    by_tail: HashMap<Bytes, Rc<Statement>>,
    next_id: u64,
    /// Entries kept once no client uses them (`prepared_statements_limit`).
    limit: usize,
}

impl StatementCache {
    pub fn new(limit: usize) -> StatementCache {
        StatementCache {
            by_tail: HashMap::new(),
            next_id: 1,
            limit: limit.max(1),
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    pub fn len(&self) -> usize {
        self.by_tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_tail.is_empty()
    }

    /// The statement for a Parse body's `tail` (everything after the name),
    /// added when new.
    pub fn intern(&mut self, tail: &[u8]) -> Rc<Statement> {
        self.get_or_insert(tail, false, |server_name| parse_message(server_name, tail))
    }

    /// The statement for SQL `PREPARE name <definition>`, where `definition`
    /// is everything after the name (`[(types)] AS statement`), added when new.
    pub fn intern_sql(&mut self, definition: &str) -> Rc<Statement> {
        let key = [SQL_KEY_MARK, definition.as_bytes()].concat();
        self.get_or_insert(&key, true, |server_name| {
            let mut query = BytesMut::new();
            crate::protocol::write::query(
                &mut query,
                &format!("PREPARE {server_name} {definition}"),
            );
            query.freeze()
        })
    }

    /// The entry for `key`, or a new one under the next server-side name,
    /// prepared by the message `prepare` builds for that name.
    fn get_or_insert(
        &mut self,
        key: &[u8],
        defined_by_sql: bool,
        prepare: impl FnOnce(&str) -> Bytes,
    ) -> Rc<Statement> {
        if let Some(statement) = self.by_tail.get(key) {
            return statement.clone();
        }
        if self.by_tail.len() >= self.limit {
            self.evict_unused();
        }
        let id = StatementId(self.next_id);
        self.next_id += 1;
        let server_name = server_name(id);
        let key = Bytes::copy_from_slice(key);
        let statement = Rc::new(Statement {
            id,
            parse: prepare(&server_name),
            server_name,
            tail: key.clone(),
            defined_by_sql,
            classified: Cell::new(None),
        });
        self.by_tail.insert(key, statement.clone());
        statement
    }

    /// Drops `statement` if nothing but the cache (and the caller's handle)
    /// holds it: a Parse that failed leaves no trace.
    pub fn forget_if_unused(&mut self, statement: Rc<Statement>) {
        let key = statement.tail.clone();
        drop(statement);
        if self
            .by_tail
            .get(&key)
            .is_some_and(|entry| Rc::strong_count(entry) == 1)
        {
            self.by_tail.remove(&key);
        }
    }

    /// Removes the entries no client holds. Server connections that prepared
    /// one keep it until their own limit evicts it; a later Parse of the same
    /// text gets a new name.
    fn evict_unused(&mut self) {
        self.by_tail.retain(|_, entry| Rc::strong_count(entry) > 1);
    }
}

/// A Parse message for `name` with the given tail.
fn parse_message(name: &str, tail: &[u8]) -> Bytes {
    let body_len = name.len() + 1 + tail.len();
    let mut out = BytesMut::with_capacity(HEADER_LEN + body_len);
    out.put_u8(FrontendKind::Parse.tag());
    out.put_u32((4 + body_len) as u32);
    out.put_slice(name.as_bytes());
    out.put_u8(0);
    out.put_slice(tail);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frontend::FrontendMessage;

    fn tail(sql: &str) -> Vec<u8> {
        let mut tail = sql.as_bytes().to_vec();
        tail.extend_from_slice(&[0, 0, 1, 0, 0, 0, 23]);
        tail
    }

    #[test]
    fn a_statement_is_classified_once() {
        let mut cache = StatementCache::new(100);
        let statement = cache.intern(&tail("insert into t values ($1)"));
        let mut calls = 0;
        for _ in 0..3 {
            let classified = statement.classified(|sql| {
                calls += 1;
                assert_eq!(sql, "insert into t values ($1)");
                crate::router::classify(sql)
            });
            assert!(classified.expect("UTF-8 text").is_write());
        }
        assert_eq!(calls, 1);
    }

    #[test]
    fn identical_statements_share_one_entry() {
        let mut cache = StatementCache::new(100);
        let a = cache.intern(&tail("select $1"));
        let b = cache.intern(&tail("select $1"));
        let c = cache.intern(&tail("select $1 + 1"));
        assert!(Rc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(cache.len(), 2);
        assert_eq!(a.sql(), b"select $1");
        let FrontendMessage::Parse {
            name,
            sql,
            param_types,
        } = FrontendMessage::decode(&a.parse).unwrap()
        else {
            panic!("not a Parse");
        };
        assert_eq!(name, &*a.server_name);
        assert!(name.starts_with(SERVER_NAME_PREFIX));
        assert_eq!(sql, "select $1");
        assert_eq!(param_types, [23]);
    }

    #[test]
    fn failed_statement_is_forgotten_unless_used() {
        let mut cache = StatementCache::new(100);
        let used = cache.intern(&tail("select 1"));
        let failed = cache.intern(&tail("selec 1"));
        cache.forget_if_unused(failed);
        assert_eq!(cache.len(), 1);
        let again = cache.intern(&tail("select 1"));
        cache.forget_if_unused(again);
        assert_eq!(cache.len(), 1, "a client still holds it");
        drop(used);
    }

    #[test]
    fn limit_evicts_only_unused_entries() {
        let mut cache = StatementCache::new(2);
        let held = cache.intern(&tail("select 1"));
        drop(cache.intern(&tail("select 2")));
        let third = cache.intern(&tail("select 3"));
        assert_eq!(cache.len(), 2);
        let again = cache.intern(&tail("select 1"));
        assert!(Rc::ptr_eq(&held, &again));
        assert!(third.id > held.id);
    }
}
