//! [`classify`]: one query string in, one [`Classified`] out.
//!
//! It owns the order of the work: one lexer pass (hints, first keyword,
//! statement count, write-function calls), then the fast path when the first
//! keyword settles everything, else pg_query's parse tree. It must not do
//! I/O, keep state, or fail: a text pg_query rejects still gets an answer
//! (the primary, [`Source::Unparsable`]).

use super::classified::{Classified, Intent, Source, Transaction};
use super::lex::{scan, Scan};
use super::tree::classify_tree;

/// Classifies a simple-protocol query string or a Parse message's text.
pub fn classify(sql: &str) -> Classified {
    let scan = scan(sql);
    if let Some(classified) = fast_path(sql, &scan) {
        return classified;
    }
    match pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) {
        Ok(parsed) => from_tree(&parsed.protobuf, &scan),
        Err(error) => {
            tracing::debug!(%error, "query classifier: pg_query could not parse; routing to the primary");
            unparsable(&scan)
        }
    }
}

fn base(scan: &Scan, intent: Intent, source: Source) -> Classified {
    Classified {
        intent,
        source,
        statements: scan.statements,
        transaction: None,
        ends_transaction: false,
        session_command: false,
        role_setting: None,
        hints: scan.hints,
    }
}

fn unparsable(scan: &Scan) -> Classified {
    base(scan, Intent::Write, Source::Unparsable)
}

fn from_tree(parsed: &pg_query::protobuf::ParseResult, scan: &Scan) -> Classified {
    let facts = classify_tree(parsed);
    // The lexer's locking words only matter where the tree walk could not
    // look; its write calls cover function calls in any expression.
    let write = facts.write || scan.write_call || (facts.incomplete && scan.locking_words);
    Classified {
        intent: if write { Intent::Write } else { Intent::Read },
        source: Source::Parsed,
        statements: facts.statements,
        transaction: facts.transaction,
        ends_transaction: ends_transaction(parsed),
        session_command: facts.session_command,
        role_setting: facts.role_setting,
        hints: scan.hints,
    }
}

/// Statements whose first keyword settles the classification exactly, in a
/// text holding one statement. `SELECT`, `WITH`, `VALUES`, `TABLE`,
/// `EXPLAIN`, `COPY`, `PREPARE`, `DECLARE`, `SET`, `RESET` and transaction
/// control with options all need the tree.
fn fast_path(sql: &str, scan: &Scan) -> Option<Classified> {
    if scan.statements == 0 {
        return Some(base(scan, Intent::Read, Source::FastPath));
    }
    if scan.statements != 1 {
        return None;
    }
    let (start, end) = scan.first_word?;
    let word = sql.get(start..end)?;
    if is_write_keyword(word) {
        return Some(base(scan, Intent::Write, Source::FastPath));
    }
    if word.eq_ignore_ascii_case("show") {
        return Some(Classified {
            session_command: true,
            ..base(scan, Intent::Read, Source::FastPath)
        });
    }
    if !scan.first_word_alone {
        return None;
    }
    let control = bare_transaction_keyword(word)?;
    Some(Classified {
        transaction: Some(control),
        ends_transaction: matches!(
            control,
            Transaction::Commit { .. } | Transaction::Rollback { .. }
        ),
        ..base(scan, Intent::Read, Source::FastPath)
    })
}

/// Whether any statement of the tree is a COMMIT or ROLLBACK (of the
/// transaction, not to a savepoint).
fn ends_transaction(parsed: &pg_query::protobuf::ParseResult) -> bool {
    use pg_query::protobuf::TransactionStmtKind;
    parsed.stmts.iter().any(|raw| {
        let Some(pg_query::NodeEnum::TransactionStmt(stmt)) =
            raw.stmt.as_ref().and_then(|node| node.node.as_ref())
        else {
            return false;
        };
        matches!(
            TransactionStmtKind::try_from(stmt.kind),
            Ok(TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback)
        )
    })
}

/// First keywords of statements that always write (DML other than SELECT,
/// every DDL verb, maintenance, locks, notifications, procedures).
fn is_write_keyword(word: &str) -> bool {
    const WRITES: [&str; 26] = [
        "insert",
        "update",
        "delete",
        "merge",
        "create",
        "alter",
        "drop",
        "truncate",
        "grant",
        "revoke",
        "comment",
        "security",
        "reindex",
        "cluster",
        "vacuum",
        "analyze",
        "analyse",
        "lock",
        "notify",
        "listen",
        "unlisten",
        "call",
        "do",
        "refresh",
        "checkpoint",
        "reassign",
    ];
    WRITES
        .iter()
        .any(|keyword| word.eq_ignore_ascii_case(keyword))
}

fn bare_transaction_keyword(word: &str) -> Option<Transaction> {
    if word.eq_ignore_ascii_case("begin") {
        Some(Transaction::Begin(super::classified::Access::Default))
    } else if word.eq_ignore_ascii_case("commit") || word.eq_ignore_ascii_case("end") {
        Some(Transaction::Commit { chain: false })
    } else if word.eq_ignore_ascii_case("rollback") || word.eq_ignore_ascii_case("abort") {
        Some(Transaction::Rollback { chain: false })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::classified::{Access, Hints, Role, RoleSetting};
    use super::*;

    #[test]
    fn ends_transaction_anywhere_in_the_text() {
        for sql in [
            "commit",
            "END",
            "rollback",
            "update t set a = 1; commit",
            "select 1; abort",
        ] {
            assert!(classify(sql).ends_transaction, "{sql}");
        }
        for sql in [
            "select 1",
            "begin",
            "select 1; rollback to savepoint s",
            "savepoint s; release savepoint s",
            "commit prepared 'x'",
        ] {
            assert!(!classify(sql).ends_transaction, "{sql}");
        }
    }

    /// Expected classification codes: `R` read / `W` write, then flags:
    /// `f` fast path, `p` parsed, `u` unparsable, `s` session command.
    const TABLE: &[(&str, &str)] = &[
        // Plain reads.
        ("Rp", "SELECT 1"),
        ("Rp", "select * from users where id = $1"),
        ("Rp", "SELECT a, b FROM t JOIN u ON t.id = u.id WHERE u.x > 3 ORDER BY a LIMIT 10"),
        ("Rp", "select count(*) from orders group by customer_id having count(*) > 1"),
        ("Rp", "SELECT now()"),
        ("Rp", "SELECT my_function(1, 2)"),
        ("Rp", "SELECT * FROM generate_series(1, 10)"),
        ("Rp", "select currval('s')"),
        ("Rp", "select lastval()"),
        ("Rp", "SELECT pg_is_in_recovery()"),
        ("Rp", "SELECT version()"),
        ("Rp", "VALUES (1), (2)"),
        ("Rp", "TABLE users"),
        ("Rp", "WITH x AS (SELECT 1) SELECT * FROM x"),
        ("Rp", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r"),
        ("Rp", "SELECT 1 UNION SELECT 2"),
        ("Rp", "SELECT 1 INTERSECT SELECT 2 EXCEPT SELECT 3"),
        ("Rp", "SELECT * FROM (SELECT 1) s"),
        ("Rp", "SELECT * FROM t WHERE id IN (SELECT id FROM u)"),
        ("Rp", "SELECT EXISTS (SELECT 1 FROM t)"),
        ("Rp", "SELECT CASE WHEN a THEN (SELECT 1) ELSE 2 END FROM t"),
        ("Rp", "SELECT coalesce((SELECT max(id) FROM t), 0)"),
        ("Rp", "SELECT ARRAY(SELECT id FROM t)"),
        ("Rp", "SELECT * FROM t TABLESAMPLE SYSTEM (10)"),
        ("Rp", "SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t_id = t.id) x"),
        ("Rp", "SELECT 'for update'"),
        ("Rp", "select 'insert into t values (1)'"),
        ("Rp", "SELECT \"update\" FROM t"),
        ("Rp", "SELECT \"for\", \"share\" FROM t"),
        ("Rp", "select * from \"delete\""),
        ("Rp", "SELECT 1 /* FOR UPDATE */"),
        ("Rp", "SELECT 1 -- FOR UPDATE\n"),
        ("Rp", "SELECT $$ nextval('s') $$"),
        ("Rp", "SELECT E'\\' for update'"),
        ("Rp", "SELECT nextval FROM t"),
        ("Rp", "SELECT \"NEXTVAL\"('s')"),
        ("Rp", "SELECT my_nextval('s')"),
        ("Rp", "SELECT substring('abc' from 1 for 2)"),
        ("Rp", "SELECT * FROM t WHERE a = ANY(ARRAY[1, 2])"),
        ("Rp", "SELECT a::text COLLATE \"C\" FROM t"),
        ("Rp", "SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t"),
        ("Rp", "SELECT * FROM t WHERE a IS NULL AND b IS TRUE"),
        ("Rp", "SELECT greatest(1, 2), least(3, 4)"),
        ("Rp", "SELECT (t.x).y FROM t"),
        ("Rp", "SELECT json_build_object('a', 1)"),
        ("Rp", "SELECT count(*) FILTER (WHERE a > 1) FROM t"),
        ("Rp", "SELECT * FROM t ORDER BY a NULLS LAST"),
        ("Rp", "SELECT a FROM t GROUP BY ROLLUP (a)"),
        ("Rp", "SELECT DISTINCT ON (a) a, b FROM t"),
        ("Rp", "SELECT * FROM t LIMIT 5 OFFSET 10"),
        ("Rp", "SELECT * FROM t FETCH FIRST 3 ROWS ONLY"),
        ("Rp", "  \n\tselect 1;"),
        ("Rp", "/* leading */ SELECT 1"),
        ("Rp", "SELECT 1; SELECT 2"),
        ("Rp", "select 1;;"),
        ("Rp", "SELECT set_config('a.b', 'c', false)"),
        ("Rp", "SELECT pg_sleep(0)"),
        ("Rp", "SELECT * FROM pg_stat_activity"),
        ("Rp", "SELECT pg_advisory_locks FROM t"),
        ("Rp", "SELECT 'pg_advisory_lock(1)'"),
        // Locking reads are writes.
        ("Wp", "SELECT * FROM t FOR UPDATE"),
        ("Wp", "select * from t for share"),
        ("Wp", "SELECT * FROM t FOR NO KEY UPDATE"),
        ("Wp", "SELECT * FROM t FOR KEY SHARE"),
        ("Wp", "SELECT * FROM t FOR UPDATE SKIP LOCKED"),
        ("Wp", "SELECT * FROM t FOR UPDATE NOWAIT"),
        ("Wp", "SELECT * FROM t FOR UPDATE OF t"),
        ("Wp", "SELECT * FROM t WHERE id = 1 LIMIT 1 FOR UPDATE"),
        ("Wp", "SELECT * FROM (SELECT * FROM t FOR UPDATE) s"),
        ("Wp", "SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)"),
        ("Wp", "WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x"),
        ("Wp", "(SELECT * FROM t FOR UPDATE)"),
        ("Wp", "SELECT * FROM t JOIN (SELECT * FROM u FOR UPDATE) s ON true"),
        ("Wp", "select * from t /* c */ for /* c */ update"),
        ("Wp", "TABLE t FOR UPDATE"),
        // SELECT INTO creates a table.
        ("Wp", "SELECT * INTO new_t FROM t"),
        ("Wp", "SELECT 1 INTO TEMP tmp"),
        ("Wp", "SELECT a INTO UNLOGGED x FROM t"),
        // Write functions.
        ("Wp", "SELECT nextval('s')"),
        ("Wp", "select NEXTVAL('s')"),
        ("Wp", "SELECT pg_catalog.nextval('s')"),
        ("Wp", "SELECT \"nextval\"('s')"),
        ("Wp", "SELECT setval('s', 10)"),
        ("Wp", "SELECT id, nextval('s') FROM t"),
        ("Wp", "SELECT * FROM t WHERE id = nextval('s')"),
        ("Wp", "SELECT coalesce(nextval('s'), 0)"),
        ("Wp", "SELECT pg_advisory_lock(1)"),
        ("Wp", "SELECT pg_advisory_xact_lock(1)"),
        ("Wp", "SELECT pg_advisory_lock_shared(1)"),
        ("Wp", "SELECT pg_try_advisory_lock(1)"),
        ("Wp", "SELECT pg_try_advisory_xact_lock_shared(1, 2)"),
        ("Wp", "SELECT pg_advisory_unlock(1)"),
        ("Wp", "SELECT pg_advisory_unlock_all()"),
        ("Wp", "SELECT pg_notify('chan', 'payload')"),
        ("Wp", "SELECT txid_current()"),
        ("Wp", "SELECT pg_current_xact_id()"),
        ("Wp", "SELECT lo_create(0)"),
        ("Wp", "VALUES (nextval('s'))"),
        ("Wp", "SELECT * FROM (SELECT nextval('s')) x"),
        ("Wp", "WITH x AS (SELECT nextval('s')) SELECT * FROM x"),
        ("Wp", "SELECT CASE WHEN true THEN nextval('s') END"),
        ("Wp", "SELECT nextval ('s')"),
        ("Wp", "SELECT nextval/* c */('s')"),
        // Data-modifying CTEs.
        ("Wp", "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x"),
        ("Wp", "WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x"),
        ("Wp", "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x"),
        ("Wp", "with a as (select 1), b as (delete from t returning 1) select * from a, b"),
        ("Wp", "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x"),
        ("Wp", "WITH x AS (MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE RETURNING t.*) SELECT * FROM x"),
        // DML.
        ("Wf", "INSERT INTO t VALUES (1)"),
        ("Wf", "insert into t (a, b) values ($1, $2) returning id"),
        ("Wf", "INSERT INTO t SELECT * FROM u"),
        ("Wf", "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a"),
        ("Wf", "UPDATE t SET a = 1 WHERE id = 2"),
        ("Wf", "update t set a = a + 1 from u where t.id = u.id"),
        ("Wf", "DELETE FROM t WHERE id = 1"),
        ("Wf", "delete from t using u where t.id = u.id returning *"),
        ("Wf", "MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET a = u.a"),
        ("Wf", "/* c */ INSERT INTO t VALUES (1)"),
        ("Wf", "-- c\nUPDATE t SET a = 1"),
        ("Wf", "TRUNCATE t"),
        ("Wf", "truncate table t restart identity cascade"),
        // DDL.
        ("Wf", "CREATE TABLE t (id bigint primary key)"),
        ("Wf", "create temp table tmp (a int)"),
        ("Wf", "CREATE INDEX CONCURRENTLY i ON t (a)"),
        ("Wf", "CREATE VIEW v AS SELECT * FROM t"),
        ("Wf", "CREATE MATERIALIZED VIEW mv AS SELECT 1"),
        ("Wf", "CREATE TABLE t2 AS SELECT * FROM t"),
        ("Wf", "CREATE SEQUENCE s"),
        ("Wf", "CREATE SCHEMA s"),
        ("Wf", "CREATE EXTENSION IF NOT EXISTS pgcrypto"),
        ("Wf", "CREATE ROLE r"),
        ("Wf", "CREATE DATABASE d"),
        ("Wf", "CREATE TYPE mood AS ENUM ('sad', 'ok')"),
        ("Wf", "CREATE OR REPLACE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql"),
        ("Wf", "CREATE TRIGGER tr AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"),
        ("Wf", "CREATE POLICY p ON t USING (true)"),
        ("Wf", "CREATE PUBLICATION pub FOR TABLE t"),
        ("Wf", "ALTER TABLE t ADD COLUMN b int"),
        ("Wf", "alter table t drop column b"),
        ("Wf", "ALTER SEQUENCE s RESTART"),
        ("Wf", "ALTER ROLE r SET search_path = x"),
        ("Wf", "ALTER SYSTEM SET work_mem = '1MB'"),
        ("Wf", "ALTER DATABASE d SET timezone = 'UTC'"),
        ("Wf", "DROP TABLE t"),
        ("Wf", "drop index if exists i"),
        ("Wf", "DROP SCHEMA s CASCADE"),
        ("Wf", "GRANT SELECT ON t TO r"),
        ("Wf", "REVOKE ALL ON t FROM r"),
        ("Wf", "COMMENT ON TABLE t IS 'x'"),
        ("Wf", "SECURITY LABEL ON TABLE t IS 'x'"),
        ("Wf", "REASSIGN OWNED BY a TO b"),
        // Maintenance, locks, notifications, procedures.
        ("Wf", "VACUUM"),
        ("Wf", "VACUUM (ANALYZE) t"),
        ("Wf", "ANALYZE t"),
        ("Wf", "analyse"),
        ("Wf", "CLUSTER t USING i"),
        ("Wf", "REINDEX TABLE t"),
        ("Wf", "LOCK TABLE t IN ACCESS EXCLUSIVE MODE"),
        ("Wf", "lock t"),
        ("Wf", "NOTIFY chan"),
        ("Wf", "NOTIFY chan, 'payload'"),
        ("Wf", "LISTEN chan"),
        ("Wf", "UNLISTEN *"),
        ("Wf", "CALL p(1)"),
        ("Wf", "DO $$ BEGIN PERFORM 1; END $$"),
        ("Wf", "do 'begin null; end'"),
        ("Wf", "REFRESH MATERIALIZED VIEW mv"),
        ("Wf", "REFRESH MATERIALIZED VIEW CONCURRENTLY mv"),
        ("Wf", "CHECKPOINT"),
        ("Wp", "IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO x"),
        ("Wp", "LOAD 'auto_explain'"),
        ("Wp", "EXECUTE my_statement(1)"),
        // COPY.
        ("Wp", "COPY t FROM STDIN"),
        ("Wp", "copy t (a, b) from stdin with (format csv)"),
        ("Wp", "COPY t FROM '/tmp/x.csv'"),
        ("Rp", "COPY t TO STDOUT"),
        ("Rp", "copy t (a) to stdout with (format binary)"),
        ("Rp", "COPY (SELECT * FROM t) TO STDOUT"),
        ("Wp", "COPY (SELECT * FROM t FOR UPDATE) TO STDOUT"),
        ("Wp", "COPY (DELETE FROM t RETURNING *) TO STDOUT"),
        ("Wp", "COPY (SELECT nextval('s')) TO STDOUT"),
        // EXPLAIN classifies what it explains.
        ("Rp", "EXPLAIN SELECT * FROM t"),
        ("Rp", "EXPLAIN ANALYZE SELECT * FROM t"),
        ("Rp", "explain (analyze, buffers) select 1"),
        ("Wp", "EXPLAIN ANALYZE DELETE FROM t"),
        ("Wp", "explain analyze delete from t where id = 1"),
        ("Wp", "EXPLAIN INSERT INTO t VALUES (1)"),
        ("Wp", "EXPLAIN (ANALYZE) UPDATE t SET a = 1"),
        ("Wp", "EXPLAIN SELECT * FROM t FOR UPDATE"),
        ("Wp", "EXPLAIN ANALYZE SELECT nextval('s')"),
        ("Wp", "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1"),
        ("Wp", "EXPLAIN EXECUTE p(1)"),
        // PREPARE classifies its statement.
        ("Rp", "PREPARE p AS SELECT * FROM t WHERE id = $1"),
        ("Rp", "prepare p (int) as select $1"),
        ("Wp", "PREPARE p AS INSERT INTO t VALUES ($1)"),
        ("Wp", "PREPARE p AS SELECT * FROM t FOR UPDATE"),
        ("Wp", "PREPARE p AS SELECT nextval('s')"),
        // Cursors.
        ("Rp", "DECLARE c CURSOR FOR SELECT * FROM t"),
        ("Wp", "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE"),
        ("Rp", "FETCH 10 FROM c"),
        ("Rp", "MOVE NEXT IN c"),
        ("Rp", "CLOSE c"),
        ("Rp", "SET CONSTRAINTS ALL DEFERRED"),
        // Session commands.
        ("Rfs", "SHOW search_path"),
        ("Rfs", "show all"),
        ("Rps", "SET search_path TO public"),
        ("Rps", "set statement_timeout = 1000"),
        ("Rps", "SET LOCAL work_mem = '1MB'"),
        ("Rps", "SET SESSION application_name = 'x'"),
        ("Rps", "SET TIME ZONE 'UTC'"),
        ("Rps", "SET NAMES 'UTF8'"),
        ("Rps", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        ("Rps", "RESET search_path"),
        ("Rps", "RESET ALL"),
        ("Rps", "DISCARD ALL"),
        ("Rps", "discard plans"),
        ("Rps", "DEALLOCATE p"),
        ("Rps", "DEALLOCATE ALL"),
        ("Rps", "SET a = 1; SET b = 2"),
        ("Rps", "SET pgdog.role TO 'replica'"),
        ("Rp", "SET a = 1; SELECT 1"),
        // Transaction control.
        ("Rf", "BEGIN"),
        ("Rf", "begin;"),
        ("Rf", "COMMIT"),
        ("Rf", "END"),
        ("Rf", "ROLLBACK"),
        ("Rf", "abort"),
        ("Rp", "BEGIN READ ONLY"),
        ("Rp", "START TRANSACTION"),
        ("Rp", "START TRANSACTION READ ONLY"),
        ("Rp", "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE"),
        ("Rp", "BEGIN WORK"),
        ("Rp", "SET TRANSACTION READ ONLY"),
        ("Rp", "SAVEPOINT a"),
        ("Rp", "RELEASE SAVEPOINT a"),
        ("Rp", "ROLLBACK TO SAVEPOINT a"),
        ("Rp", "COMMIT AND CHAIN"),
        ("Wp", "PREPARE TRANSACTION 'x'"),
        ("Wp", "COMMIT PREPARED 'x'"),
        ("Wp", "ROLLBACK PREPARED 'x'"),
        ("Rp", "BEGIN; SELECT 1; COMMIT"),
        ("Wp", "BEGIN; INSERT INTO t VALUES (1); COMMIT;"),
        // Multi-statement: a write if any statement writes.
        ("Wp", "SELECT 1; INSERT INTO t VALUES (1)"),
        ("Wp", "INSERT INTO t VALUES (1); SELECT 1"),
        ("Wp", "SELECT 1; SELECT nextval('s')"),
        ("Wp", "SELECT 1; SELECT * FROM t FOR UPDATE"),
        ("Wp", "select 1; drop table t"),
        // Hints do not change the intent.
        ("Rp", "/* pgdog_role: primary */ SELECT 1"),
        ("Wf", "/* pgdog_role: replica */ INSERT INTO t VALUES (1)"),
        // Empty and comment-only queries.
        ("Rf", ""),
        ("Rf", "   "),
        ("Rf", ";"),
        ("Rf", "/* nothing */"),
        ("Rf", "-- nothing"),
        // Unparsable text goes to the primary.
        ("Wu", "SELEC 1"),
        ("Wu", "SELECT * FROM"),
        ("Wu", "SELECT 'unterminated"),
        ("Wu", "select (1"),
        ("Wu", "BEGIN READ SIDEWAYS"),
        ("Wu", "SELECT 1 FOR"),
        ("Wu", "SELECT \0"),
        ("Wu", "WITH x AS (SELECT 1)"),
        ("Wu", "garbage; SELECT 1"),
        ("Wf", "INSERT garbage"),
    ];

    #[test]
    fn table() {
        assert!(TABLE.len() >= 200, "{} rows", TABLE.len());
        let mut failures = Vec::new();
        for &(code, sql) in TABLE {
            let got = classify(sql);
            let intent = if code.starts_with('W') {
                Intent::Write
            } else {
                Intent::Read
            };
            let source = if code.contains('f') {
                Source::FastPath
            } else if code.contains('u') {
                Source::Unparsable
            } else {
                Source::Parsed
            };
            let session = code.contains('s');
            if got.intent != intent || got.source != source || got.session_command != session {
                failures.push(format!("{code} {sql:?}: got {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    fn transaction(sql: &str) -> Option<Transaction> {
        classify(sql).transaction
    }

    #[test]
    fn transaction_control() {
        use Transaction::*;
        assert_eq!(transaction("BEGIN"), Some(Begin(Access::Default)));
        assert_eq!(
            transaction("BEGIN TRANSACTION"),
            Some(Begin(Access::Default))
        );
        assert_eq!(
            transaction("BEGIN READ ONLY"),
            Some(Begin(Access::ReadOnly))
        );
        assert_eq!(
            transaction("begin read write"),
            Some(Begin(Access::ReadWrite))
        );
        assert_eq!(
            transaction("START TRANSACTION READ ONLY"),
            Some(Begin(Access::ReadOnly))
        );
        assert_eq!(
            transaction("START TRANSACTION"),
            Some(Begin(Access::Default))
        );
        assert_eq!(
            transaction("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE"),
            Some(Begin(Access::ReadOnly))
        );
        assert_eq!(
            transaction("START TRANSACTION READ ONLY, READ WRITE"),
            Some(Begin(Access::ReadWrite))
        );
        assert_eq!(
            transaction("/* c */ begin /* c */"),
            Some(Begin(Access::Default))
        );
        assert_eq!(
            transaction("SET TRANSACTION READ ONLY"),
            Some(SetAccess(Access::ReadOnly))
        );
        assert_eq!(
            transaction("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Some(SetAccess(Access::Default))
        );
        assert_eq!(
            transaction("set transaction read write"),
            Some(SetAccess(Access::ReadWrite))
        );
        assert_eq!(
            transaction("SET transaction_read_only = on"),
            Some(SetAccess(Access::ReadOnly))
        );
        assert_eq!(
            transaction("SET transaction_read_only TO false"),
            Some(SetAccess(Access::ReadWrite))
        );
        assert_eq!(transaction("COMMIT"), Some(Commit { chain: false }));
        assert_eq!(transaction("COMMIT WORK"), Some(Commit { chain: false }));
        assert_eq!(
            transaction("COMMIT AND CHAIN"),
            Some(Commit { chain: true })
        );
        assert_eq!(transaction("END"), Some(Commit { chain: false }));
        assert_eq!(transaction("ROLLBACK"), Some(Rollback { chain: false }));
        assert_eq!(
            transaction("ROLLBACK AND CHAIN"),
            Some(Rollback { chain: true })
        );
        assert_eq!(transaction("ABORT"), Some(Rollback { chain: false }));
        assert_eq!(transaction("SAVEPOINT s"), Some(Savepoint));
        assert_eq!(transaction("RELEASE s"), Some(ReleaseSavepoint));
        assert_eq!(transaction("ROLLBACK TO s"), Some(RollbackToSavepoint));
        assert_eq!(
            transaction("PREPARE TRANSACTION 'g'"),
            Some(PrepareTransaction)
        );
        assert_eq!(transaction("COMMIT PREPARED 'g'"), Some(CommitPrepared));
        assert_eq!(transaction("ROLLBACK PREPARED 'g'"), Some(RollbackPrepared));
        assert_eq!(
            transaction("BEGIN READ ONLY; SELECT 1"),
            Some(Begin(Access::ReadOnly))
        );
        assert_eq!(transaction("SELECT 1; BEGIN"), None);
        assert_eq!(transaction("SELECT 1"), None);
        assert_eq!(transaction("EXPLAIN SELECT 1"), None);
        let snapshot = classify("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'");
        assert_eq!(
            (
                snapshot.transaction,
                snapshot.session_command,
                snapshot.intent
            ),
            (Some(SetAccess(Access::Default)), false, Intent::Read)
        );
    }

    fn role_setting(sql: &str) -> Option<RoleSetting> {
        classify(sql).role_setting
    }

    #[test]
    fn pgdog_role_settings() {
        use RoleSetting::*;
        assert_eq!(
            role_setting("SET pgdog.role TO 'primary'"),
            Some(Set {
                role: Role::Primary,
                local: false
            })
        );
        assert_eq!(
            role_setting("SET pgdog.role = 'replica'"),
            Some(Set {
                role: Role::Replica,
                local: false
            })
        );
        assert_eq!(
            role_setting("set pgdog.role to replica"),
            Some(Set {
                role: Role::Replica,
                local: false
            })
        );
        assert_eq!(
            role_setting("SET LOCAL pgdog.role TO 'primary'"),
            Some(Set {
                role: Role::Primary,
                local: true
            })
        );
        assert_eq!(
            role_setting("SET SESSION pgdog.role = 'PRIMARY'"),
            Some(Set {
                role: Role::Primary,
                local: false
            })
        );
        assert_eq!(
            role_setting("SET PGDOG.ROLE TO 'replica'"),
            Some(Set {
                role: Role::Replica,
                local: false
            })
        );
        assert_eq!(
            role_setting("SET pgdog.role TO 'leader'"),
            Some(Invalid { local: false })
        );
        assert_eq!(
            role_setting("SET LOCAL pgdog.role TO 1"),
            Some(Invalid { local: true })
        );
        assert_eq!(
            role_setting("SET pgdog.role TO DEFAULT"),
            Some(Reset { local: false })
        );
        assert_eq!(
            role_setting("RESET pgdog.role"),
            Some(Reset { local: false })
        );
        assert_eq!(role_setting("RESET ALL"), Some(Reset { local: false }));
        assert_eq!(role_setting("DISCARD ALL"), Some(Reset { local: false }));
        assert_eq!(role_setting("SET pgdog.shard TO 1"), None);
        assert_eq!(role_setting("SET search_path TO x"), None);
        assert_eq!(role_setting("SELECT 'SET pgdog.role TO primary'"), None);
        assert_eq!(
            role_setting("SET pgdog.role TO 'primary'; SET pgdog.role TO 'replica'"),
            Some(Set {
                role: Role::Replica,
                local: false
            })
        );
        assert_eq!(
            role_setting("SET pgdog.role TO 'primary'; SELECT 1"),
            Some(Set {
                role: Role::Primary,
                local: false
            })
        );
    }

    #[test]
    fn comment_hints() {
        let hinted = classify("/* pgdog_role: primary */ SELECT * FROM users");
        assert_eq!(hinted.hints.role, Some(Role::Primary));
        assert_eq!(hinted.intent, Intent::Read);
        assert_eq!(
            classify("SELECT 1 /* pgdog_role: replica */").hints.role,
            Some(Role::Replica)
        );
        assert_eq!(
            classify("SELECT 1 -- pgdog_role: primary").hints.role,
            Some(Role::Primary)
        );
        assert_eq!(
            classify("INSERT INTO t VALUES (1) /* pgdog_shard: 2 */")
                .hints
                .shard,
            Some(2)
        );
        assert_eq!(
            classify("SELECT '/* pgdog_role: primary */'").hints,
            Hints::default()
        );
        assert_eq!(
            classify("SELECT $$ /* pgdog_shard: 1 */ $$").hints,
            Hints::default()
        );
        assert_eq!(
            classify("SELEC /* pgdog_role: replica */ 1").hints.role,
            Some(Role::Replica)
        );
        let sql = "/* pgdog_sharding_key: \"us-east-1\" */ SELECT * FROM t";
        let key = classify(sql).hints.sharding_key.expect("sharding key hint");
        assert_eq!(key.slice(sql), Some("us-east-1"));
        let both = classify(
            "/* pgdog_shard: 0, pgdog_role: replica */ CREATE INDEX CONCURRENTLY i ON t (a)",
        );
        assert_eq!(
            (both.hints.shard, both.hints.role),
            (Some(0), Some(Role::Replica))
        );
        assert_eq!(both.source, Source::FastPath);
    }

    #[test]
    fn statement_counts() {
        assert_eq!(classify("").statements, 0);
        assert_eq!(classify("SELECT 1").statements, 1);
        assert_eq!(classify("SELECT 1; SELECT 2;").statements, 2);
        assert_eq!(classify("INSERT INTO t VALUES (';')").statements, 1);
        assert_eq!(
            classify("CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END").statements,
            1
        );
    }

    #[test]
    fn fast_path_never_decides_select() {
        for sql in [
            "SELECT 1",
            "select * from t for update",
            "WITH x AS (DELETE FROM t) SELECT 1",
            "VALUES (1)",
        ] {
            assert_ne!(classify(sql).source, Source::FastPath, "{sql}");
        }
    }

    #[test]
    fn large_and_hostile_inputs_get_an_answer() {
        let long = format!("SELECT * FROM t WHERE id IN ({}0)", "1, ".repeat(10_000));
        assert_eq!(classify(&long).intent, Intent::Read);
        // Past pg_query's (or prost's decoding) nesting limits the parse
        // fails, and the text goes to the primary rather than overflow a
        // stack.
        for nested in [
            format!("SELECT {}1", "1 + ".repeat(5_000)),
            format!("SELECT {}1{}", "(".repeat(2_000), ")".repeat(2_000)),
            format!("SELECT {}1{}", "(SELECT ".repeat(300), ")".repeat(300)),
        ] {
            let got = classify(&nested);
            assert!(
                got.intent == Intent::Write || got.source == Source::Parsed,
                "{got:?}"
            );
        }
        let _ = classify("\u{feff}SELECT 1");
        let _ = classify("SELECT 'é' FROM \"ünï\"");
    }
}
