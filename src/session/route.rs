//! Which kind of server a request needs: the read/write routing of a
//! checkout. It looks at the SQL of the request's messages (a simple Query,
//! a Parse, or the text of the named statement a Bind runs), classified once
//! per distinct text by the core's `router::QueryCache`, and at the session's
//! `pgdog.role` setting.
//!
//! Rules (issue 4, PgDog's manual routing): a comment hint
//! `/* pgdog_role: primary|replica */` decides; else the session's
//! `pgdog.role` (SET, or the startup parameter); else the SQL: a request that
//! writes anywhere, or opens a transaction that is not `READ ONLY`, goes to
//! the primary (`read_write_strategy = "conservative"`); `BEGIN READ ONLY`
//! goes to a replica whenever one is in rotation; other reads are balanced
//! per `read_write_split` (`prefer_primary`: to the primary unless a hint
//! says replica).
//!
//! Must not: be asked when the cluster has one server (nothing to choose,
//! and no SQL is parsed then), or decide anything inside a transaction (the
//! session keeps its server until the transaction ends).

use crate::config::ReadWriteSplit;
use crate::pool::balance::Intent;
use crate::prepared::ClientStatements;
use crate::protocol::frame;
use crate::protocol::frontend::{FrontendKind, FrontendMessage};
use crate::protocol::DEFAULT_MAX_MESSAGE_LEN;
use crate::router::{Access, Classified, QueryCache, Role, Transaction};

/// The session's own `pgdog.role` (from `SET pgdog.role` or the startup
/// packet), if it names a role.
pub fn session_role(value: Option<&str>) -> Option<Role> {
    let value = value?.trim();
    if value.eq_ignore_ascii_case("primary") {
        Some(Role::Primary)
    } else if value.eq_ignore_ascii_case("replica") {
        Some(Role::Replica)
    } else {
        None
    }
}

/// What `batch` (complete messages) needs.
pub fn intent(
    batch: &[u8],
    statements: &ClientStatements,
    cache: &mut QueryCache,
    session: Option<Role>,
    split: ReadWriteSplit,
) -> Intent {
    let mut seen = Seen::default();
    let mut offset = 0;
    while let Ok(Some(header)) = frame::header(&batch[offset..], DEFAULT_MAX_MESSAGE_LEN) {
        let end = offset + header.total_len;
        let Some(msg) = batch.get(offset..end) else {
            break;
        };
        offset = end;
        match FrontendKind::from_tag(header.tag) {
            Ok(FrontendKind::Query | FrontendKind::Parse | FrontendKind::Bind) => {}
            Ok(FrontendKind::FunctionCall) => seen.write = true,
            _ => continue,
        }
        match FrontendMessage::decode(msg) {
            Ok(FrontendMessage::Query { sql }) | Ok(FrontendMessage::Parse { sql, .. }) => {
                seen.add(&cache.get_or_classify(sql));
            }
            Ok(FrontendMessage::Bind { statement, .. }) if !statement.is_empty() => {
                match statements
                    .get(statement)
                    .and_then(|s| std::str::from_utf8(s.sql()).ok())
                {
                    Some(sql) => seen.add(&cache.get_or_classify(sql)),
                    // A statement sleddog does not know (not renamed, or
                    // prepared by SQL): the primary, to be safe.
                    None => seen.write = true,
                }
            }
            _ => {}
        }
    }
    seen.decide(session, split)
}

/// What the request's statements asked for, together.
#[derive(Default)]
struct Seen {
    write: bool,
    read_only_transaction: bool,
    /// A comment hint; the first one wins.
    hint: Option<Role>,
    any: bool,
}

impl Seen {
    fn add(&mut self, classified: &Classified) {
        self.any = true;
        self.hint = self.hint.or(classified.hints.role);
        match classified.transaction {
            Some(Transaction::Begin(Access::ReadOnly)) => {
                self.read_only_transaction = true;
            }
            Some(Transaction::Begin(_)) => self.write = true,
            _ => {}
        }
        if classified.is_write() {
            self.write = true;
        }
    }

    fn decide(&self, session: Option<Role>, split: ReadWriteSplit) -> Intent {
        match self.hint.or(session) {
            Some(Role::Primary) => return Intent::Write,
            Some(Role::Replica) => return Intent::ReadOnlyTransaction,
            None => {}
        }
        if self.write || !self.any {
            Intent::Write
        } else if self.read_only_transaction {
            Intent::ReadOnlyTransaction
        } else if split == ReadWriteSplit::PreferPrimary {
            Intent::Write
        } else {
            Intent::Read
        }
    }
}
