//! Which kind of server a request needs: the read/write routing of a
//! checkout. It looks at the SQL of the request's messages (a simple Query,
//! a Parse, or the text of the named statement a Bind runs), classified once
//! per distinct text by the core's `router::QueryCache`, and at the session's
//! `pgdog.role` setting.
//!
//! Rules (issue 4, PgDog's manual routing): a comment hint
//! `/* pgdog_role: primary|replica */` decides; else a `SET [LOCAL]
//! pgdog.role` in the request itself; else the session's `pgdog.role` (SET
//! earlier, or the startup parameter); else the SQL: a request that
//! writes anywhere goes to the primary; `BEGIN READ ONLY` goes to a replica
//! whenever one is in rotation; other reads are balanced per
//! `read_write_split` (`prefer_primary`: to the primary unless a hint says
//! replica). A transaction opened without `READ ONLY` goes to the primary
//! under `read_write_strategy = "conservative"`; under `"aggressive"` the
//! statements sent with it decide, as if the `BEGIN` were not there (the
//! relay holds back a `BEGIN` sent alone until the next request under both
//! strategies, see [`Route::lone_begin`], so that `BEGIN; SET LOCAL
//! pgdog.role TO 'replica'` sent one by one still routes the transaction). `BEGIN READ WRITE` and `SERIALIZABLE` stay on the
//! primary under both: a hot standby refuses them at `BEGIN` ("hot-standby"
//! in the PostgreSQL docs, "Hot Standby: user's overview").
//!
//! Must not: be asked when the cluster has one server (nothing to choose,
//! and no SQL is parsed then), or decide anything inside a transaction (the
//! session keeps its server until the transaction ends; a deferred `BEGIN`
//! holds none, so its transaction's first request is asked).

use crate::config::{ReadWriteSplit, ReadWriteStrategy};
use crate::pool::balance::Intent;
use crate::prepared::ClientStatements;
use crate::protocol::frame;
use crate::protocol::frontend::{FrontendKind, FrontendMessage};
use crate::protocol::DEFAULT_MAX_MESSAGE_LEN;
use crate::router::{first_word, Access, Classified, QueryCache, Role, RoleSetting, Transaction};

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

/// Where a request goes, and whether it is a `BEGIN` the relay may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub intent: Intent,
    /// The request's statements are one `BEGIN`/`START TRANSACTION` with
    /// nothing else deciding the route (no `READ ONLY`/`READ WRITE`, no
    /// `SERIALIZABLE`, no hint, no `pgdog.role`): the relay may answer it
    /// itself and let the next request choose the server
    /// (`Relay::defer_begin`; the relay checks the request is one simple
    /// Query).
    pub lone_begin: bool,
}

/// What `batch` (complete messages) needs; its statements are classified
/// once, for both answers.
pub fn route(
    batch: &[u8],
    statements: &ClientStatements,
    cache: &mut QueryCache,
    session: Option<Role>,
    strategy: ReadWriteStrategy,
    split: ReadWriteSplit,
    after_begin: bool,
) -> Route {
    // The first request after a `BEGIN` the relay answered itself routes
    // that transaction: as if the BEGIN were part of it.
    let mut seen = Seen {
        begin: after_begin,
        ..Seen::default()
    };
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
                seen.add(&cache.get_or_classify(sql), sql.as_bytes());
            }
            Ok(FrontendMessage::Bind { statement, .. }) if !statement.is_empty() => {
                let known = statements.get(statement).and_then(|s| {
                    let classified = s.classified(|sql| cache.get_or_classify(sql))?;
                    Some((classified, s.sql()))
                });
                match known {
                    Some((classified, sql)) => seen.add(&classified, sql),
                    // A statement sleddog does not know (not renamed, or
                    // prepared by SQL): the primary, to be safe.
                    None => seen.write = true,
                }
            }
            _ => {}
        }
    }
    Route {
        intent: seen.decide(session, strategy, split),
        lone_begin: !after_begin
            && seen.begin
            && !seen.others
            && !seen.write
            && seen.hint.or(seen.setting).or(session).is_none(),
    }
}

/// The CommandComplete tag of a `BEGIN` or `START TRANSACTION` (the first
/// keyword, after white space and comments): `BEGIN [WORK|TRANSACTION]`
/// answers `BEGIN`, `START TRANSACTION` answers `START TRANSACTION`.
pub fn begin_tag(sql: &str) -> &'static str {
    match first_word(sql) {
        Some(word) if word.eq_ignore_ascii_case("start") => "START TRANSACTION",
        _ => "BEGIN",
    }
}

/// What the request's statements asked for, together.
#[derive(Default)]
struct Seen {
    write: bool,
    read_only_transaction: bool,
    /// A `BEGIN`/`START TRANSACTION` a replica could run: no access mode,
    /// not `SERIALIZABLE`.
    begin: bool,
    /// A statement besides such a `BEGIN`.
    others: bool,
    /// A comment hint; the first one wins.
    hint: Option<Role>,
    /// `SET [LOCAL] pgdog.role` to a role in the request: it decides where
    /// the request itself goes too (after a comment hint, before the
    /// session's setting, which it is about to replace).
    setting: Option<Role>,
    any: bool,
}

impl Seen {
    /// `classified` is the answer for `sql`.
    fn add(&mut self, classified: &Classified, sql: &[u8]) {
        self.any = true;
        self.hint = self.hint.or(classified.hints.role);
        if let Some(RoleSetting::Set { role, .. }) = classified.role_setting {
            self.setting = Some(role);
        }
        match classified.transaction {
            Some(Transaction::Begin(Access::ReadOnly)) => {
                self.read_only_transaction = true;
            }
            Some(Transaction::Begin(Access::Default)) if !names_serializable(sql) => {
                self.begin = true;
                // Only the first statement is described: the rest of a
                // multi-statement text is something else.
                self.others |= classified.statements > 1;
            }
            Some(Transaction::Begin(_)) => self.write = true,
            // SET TRANSACTION: only READ ONLY is sure to suit a standby,
            // which refuses READ WRITE, SERIALIZABLE and a snapshot the
            // primary exported.
            Some(Transaction::SetAccess(access)) => {
                self.others = true;
                self.write |= access != Access::ReadOnly;
            }
            _ => self.others = true,
        }
        if classified.is_write() {
            self.write = true;
        }
    }

    fn decide(
        &self,
        session: Option<Role>,
        strategy: ReadWriteStrategy,
        split: ReadWriteSplit,
    ) -> Intent {
        match self.hint.or(self.setting).or(session) {
            Some(Role::Primary) => return Intent::Write,
            Some(Role::Replica) => return Intent::ReadOnlyTransaction,
            None => {}
        }
        // Aggressive: the statements that came with the BEGIN decide; a
        // BEGIN with nothing after it cannot be judged and stays safe.
        let begin_forces_write =
            self.begin && (strategy == ReadWriteStrategy::Conservative || !self.others);
        if self.write || !self.any || begin_forces_write {
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

/// A lexical look for `SERIALIZABLE` in a `BEGIN`'s text (a comment naming
/// it only errs toward the primary). A hot standby refuses the level.
fn names_serializable(sql: &[u8]) -> bool {
    const WORD: &[u8] = b"serializable";
    sql.windows(WORD.len())
        .any(|w| w.eq_ignore_ascii_case(WORD))
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::protocol::write;

    const AGGRESSIVE: ReadWriteStrategy = ReadWriteStrategy::Aggressive;
    const CONSERVATIVE: ReadWriteStrategy = ReadWriteStrategy::Conservative;
    const SPLIT: ReadWriteSplit = ReadWriteSplit::IncludePrimary;

    fn message(out: &mut BytesMut, tag: u8, body: &[u8]) {
        out.put_u8(tag);
        out.put_u32(u32::try_from(body.len() + 4).unwrap());
        out.put_slice(body);
    }

    /// Parse (unnamed), Bind, Execute for each statement, then one Sync: a
    /// pipelined extended-protocol batch.
    fn pipelined(statements: &[&str]) -> BytesMut {
        let mut out = BytesMut::new();
        for sql in statements {
            let mut parse = vec![0];
            parse.extend_from_slice(sql.as_bytes());
            parse.extend_from_slice(&[0, 0, 0]);
            message(&mut out, b'P', &parse);
            message(&mut out, b'B', &[0, 0, 0, 0, 0, 0, 0, 0]);
            message(&mut out, b'E', &[0, 0, 0, 0, 0]);
        }
        write::sync(&mut out);
        out
    }

    fn simple(sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        write::query(&mut out, sql);
        out
    }

    fn route(batch: &[u8], session: Option<Role>, strategy: ReadWriteStrategy) -> Intent {
        let statements = ClientStatements::new(false, false, false);
        let mut cache = QueryCache::new(16);
        let routed = super::route(
            batch,
            &statements,
            &mut cache,
            session,
            strategy,
            SPLIT,
            false,
        );
        routed.intent
    }

    /// The first request after a `BEGIN` the relay answered itself.
    fn route_after_begin(batch: &[u8], strategy: ReadWriteStrategy) -> Intent {
        let statements = ClientStatements::new(false, false, false);
        let mut cache = QueryCache::new(16);
        super::route(batch, &statements, &mut cache, None, strategy, SPLIT, true).intent
    }

    #[test]
    fn conservative_sends_every_read_write_transaction_to_the_primary() {
        for batch in [
            simple("BEGIN"),
            simple("BEGIN; SELECT 1"),
            simple("start transaction; select 1; commit"),
            pipelined(&["BEGIN", "SELECT 1"]),
        ] {
            assert_eq!(route(&batch, None, CONSERVATIVE), Intent::Write);
        }
        let read_only = simple("BEGIN READ ONLY; SELECT 1");
        assert_eq!(
            route(&read_only, None, CONSERVATIVE),
            Intent::ReadOnlyTransaction
        );
        assert_eq!(route(&simple("SELECT 1"), None, CONSERVATIVE), Intent::Read);
    }

    #[test]
    fn aggressive_routes_a_transaction_by_the_statements_sent_with_it() {
        for batch in [
            simple("BEGIN; SELECT 1"),
            simple("begin; select 1; commit"),
            simple("START TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT 1"),
            pipelined(&["BEGIN", "SELECT 1"]),
            pipelined(&["BEGIN", "SELECT 1", "COMMIT"]),
        ] {
            assert_eq!(route(&batch, None, AGGRESSIVE), Intent::Read, "{batch:?}");
        }
        for batch in [
            simple("BEGIN; INSERT INTO t VALUES (1)"),
            simple("BEGIN; SELECT 1; UPDATE t SET a = 1"),
            simple("BEGIN; SELECT nextval('s')"),
            pipelined(&["BEGIN", "SELECT 1", "DELETE FROM t"]),
            pipelined(&["BEGIN", "SELECT * FROM t FOR UPDATE"]),
        ] {
            assert_eq!(route(&batch, None, AGGRESSIVE), Intent::Write, "{batch:?}");
        }
    }

    #[test]
    fn aggressive_keeps_what_a_replica_cannot_run_on_the_primary() {
        for batch in [
            // Nothing to judge the transaction by.
            simple("BEGIN"),
            pipelined(&["BEGIN"]),
            // A hot standby refuses these at BEGIN.
            simple("BEGIN READ WRITE; SELECT 1"),
            simple("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT 1"),
            pipelined(&["START TRANSACTION READ WRITE", "SELECT 1"]),
        ] {
            assert_eq!(route(&batch, None, AGGRESSIVE), Intent::Write, "{batch:?}");
        }
        let read_only = pipelined(&["BEGIN READ ONLY", "SELECT 1"]);
        assert_eq!(
            route(&read_only, None, AGGRESSIVE),
            Intent::ReadOnlyTransaction
        );
    }

    #[test]
    fn hints_and_the_session_role_decide_before_the_strategy() {
        let hinted = simple("/* pgdog_role: primary */ BEGIN; SELECT 1");
        assert_eq!(route(&hinted, None, AGGRESSIVE), Intent::Write);
        let read = simple("BEGIN; SELECT 1");
        assert_eq!(route(&read, Some(Role::Primary), AGGRESSIVE), Intent::Write);
        let write = simple("BEGIN; INSERT INTO t VALUES (1)");
        assert_eq!(
            route(&write, Some(Role::Replica), AGGRESSIVE),
            Intent::ReadOnlyTransaction
        );
    }

    #[test]
    fn prefer_primary_still_keeps_aggressive_reads_on_the_primary() {
        let statements = ClientStatements::new(false, false, false);
        let mut cache = QueryCache::new(16);
        let batch = simple("BEGIN; SELECT 1");
        let split = ReadWriteSplit::PreferPrimary;
        let routed = super::route(
            &batch,
            &statements,
            &mut cache,
            None,
            AGGRESSIVE,
            split,
            false,
        );
        assert_eq!(routed.intent, Intent::Write);
    }

    #[test]
    fn set_pgdog_role_routes_its_own_request() {
        for strategy in [CONSERVATIVE, AGGRESSIVE] {
            // After a BEGIN held back: SET LOCAL picks the transaction's server.
            let local = simple("SET LOCAL pgdog.role TO 'replica'");
            assert_eq!(
                route_after_begin(&local, strategy),
                Intent::ReadOnlyTransaction
            );
            let primary = simple("set local pgdog.role = 'primary'; select 1");
            assert_eq!(route_after_begin(&primary, strategy), Intent::Write);
            // In one text with the BEGIN, and for the session.
            let inline = simple("BEGIN; SET LOCAL pgdog.role TO 'replica'; SELECT 1");
            assert_eq!(route(&inline, None, strategy), Intent::ReadOnlyTransaction);
            let session = simple("SET pgdog.role TO 'replica'");
            assert_eq!(
                route(&session, Some(Role::Primary), strategy),
                Intent::ReadOnlyTransaction,
                "the new setting wins over the old one"
            );
            // A comment hint still comes first.
            let hinted = simple("/* pgdog_role: primary */ SET LOCAL pgdog.role TO 'replica'");
            assert_eq!(route(&hinted, None, strategy), Intent::Write);
            // Other values do not route.
            let invalid = simple("SET LOCAL pgdog.role TO 'leader'");
            assert_eq!(route_after_begin(&invalid, CONSERVATIVE), Intent::Write);
        }
    }

    #[test]
    fn set_transaction_other_than_read_only_keeps_the_primary() {
        for sql in [
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION READ WRITE",
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        ] {
            assert_eq!(
                route_after_begin(&simple(sql), AGGRESSIVE),
                Intent::Write,
                "{sql}"
            );
            let pipelined = pipelined(&["BEGIN", sql, "SELECT 1"]);
            assert_eq!(route(&pipelined, None, AGGRESSIVE), Intent::Write, "{sql}");
        }
        let read_only = simple("SET TRANSACTION READ ONLY");
        assert_eq!(route_after_begin(&read_only, AGGRESSIVE), Intent::Read);
    }

    #[test]
    fn after_a_held_begin_the_strategy_decides() {
        let read = simple("SELECT 1");
        assert_eq!(route_after_begin(&read, CONSERVATIVE), Intent::Write);
        assert_eq!(route_after_begin(&read, AGGRESSIVE), Intent::Read);
        let write = simple("INSERT INTO t VALUES (1)");
        assert_eq!(route_after_begin(&write, AGGRESSIVE), Intent::Write);
        let commit = simple("COMMIT");
        assert_eq!(route_after_begin(&commit, CONSERVATIVE), Intent::Write);
    }

    #[test]
    fn only_a_lone_undecided_begin_is_deferred() {
        let statements = ClientStatements::new(false, false, false);
        let mut cache = QueryCache::new(16);
        let mut defer = |sql: &str, session| {
            let batch = simple(sql);
            let routed = super::route(
                &batch,
                &statements,
                &mut cache,
                session,
                CONSERVATIVE,
                SPLIT,
                false,
            );
            routed.lone_begin.then(|| begin_tag(sql))
        };
        assert_eq!(defer("BEGIN", None), Some("BEGIN"));
        assert_eq!(defer("begin work;", None), Some("BEGIN"));
        assert_eq!(
            defer("begin isolation level repeatable read", None),
            Some("BEGIN")
        );
        assert_eq!(defer("START TRANSACTION", None), Some("START TRANSACTION"));
        assert_eq!(
            defer("/* a /* nested */ note */ -- why\n start transaction", None),
            Some("START TRANSACTION")
        );
        for sql in [
            "BEGIN READ ONLY",
            "BEGIN READ WRITE",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN; SELECT 1",
            "/* pgdog_role: replica */ BEGIN",
            "SELECT 1",
            "COMMIT",
            "",
        ] {
            assert_eq!(defer(sql, None), None, "{sql}");
        }
        assert_eq!(defer("BEGIN", Some(Role::Replica)), None);
    }
}
