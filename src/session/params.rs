//! Per-client session GUC state, as pure data: what a client's session has
//! set ([`Params`]), how to read it back from a server ([`capture_sql`],
//! [`Params::from_data_rows`]), how to move a server connection from one
//! state to another ([`sync_sql`]), what a startup packet asks for
//! ([`startup_params`]), and which parameters Postgres reports
//! ([`is_reported`]). The SQL scan that says when a capture is due lives in
//! `sql_scan` and is re-exported here.
//!
//! Must not: do I/O, await, or simulate Postgres's GUC rules (commit,
//! rollback, savepoints, `SET LOCAL`, errors). The relay asks the server what
//! the session state is after a transaction that may have changed it, and
//! trusts that answer.
//!
//! Facts about `pg_settings` this relies on (PostgreSQL 15, checked against a
//! real server in tests/session_params.rs):
//! - `source = 'session'` marks values set by `SET`/`set_config(.., false)`;
//!   `'client'` marks startup-packet values, which are the connection's reset
//!   values (so the pool's own startup values are its baseline, not session
//!   state). `SET x TO DEFAULT` and `RESET x` return the source to the reset
//!   source.
//! - `transaction_isolation` (and the other `transaction_*`) show
//!   `source = 'session'` on every connection; they are per transaction and
//!   never replayed.
//! - `pg_settings` hides custom placeholder GUCs (`app.user_id`), `role`,
//!   `session_authorization`, `is_superuser` and `seed`. The capture reads
//!   `role` and the session user explicitly, and custom names only when told
//!   them ([`capture_sql`]).
//! - `set_config(name, NULL, false)` is `RESET name`; `RESET ALL` does not
//!   reset `role` or `session_authorization`; setting
//!   `session_authorization` resets `role`.

use std::fmt;

use crate::protocol::backend::data_row_values;

pub use super::sql_scan::{custom_guc_names, scan_statements, SqlEffects};

/// The capture query without custom GUC names: one row (name, setting) per
/// GUC this session set, names lowercased. Same as `capture_sql([])`.
pub const CAPTURE_SQL: &str = concat!(
    "SELECT lower(name), setting FROM pg_catalog.pg_settings ",
    "WHERE source = 'session' AND name NOT IN ",
    "('transaction_isolation', 'transaction_read_only', 'transaction_deferrable') ",
    // The session user differs from the one that logged in only after
    // SET SESSION AUTHORIZATION; pg_stat_get_activity keeps the login user.
    "UNION ALL SELECT 'session_authorization', session_user::text ",
    "WHERE (SELECT usesysid FROM pg_catalog.pg_stat_get_activity(pg_catalog.pg_backend_pid())) ",
    "IS DISTINCT FROM (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = session_user) ",
    "UNION ALL SELECT 'role', pg_catalog.current_setting('role') ",
    "WHERE pg_catalog.current_setting('role') <> 'none'"
);

/// [`CAPTURE_SQL`] plus the current values of the given custom (dotted) GUC
/// names, which `pg_settings` does not list. Names without a dot, or with a
/// NUL, are skipped. A custom GUC that is unset or reset has no row: a reset
/// placeholder reads '' (not NULL) and the capture counts '' as unset, so a
/// custom GUC explicitly set to '' is not kept.
pub fn capture_sql<'a>(custom_names: impl IntoIterator<Item = &'a str>) -> String {
    let mut sql = String::from(CAPTURE_SQL);
    let mut any = false;
    for name in custom_names {
        if !name.contains('.') || name.contains('\0') {
            continue;
        }
        sql.push_str(if any {
            ", "
        } else {
            " UNION ALL SELECT lower(n), pg_catalog.current_setting(n, true) \
             FROM unnest(ARRAY["
        });
        any = true;
        push_literal(&mut sql, name);
    }
    if any {
        // A loaded extension's dotted GUC is in pg_settings: the first part
        // already answered for it.
        sql.push_str(
            "]::text[]) AS n WHERE pg_catalog.current_setting(n, true) <> '' \
             AND lower(n) NOT IN (SELECT lower(name) FROM pg_catalog.pg_settings)",
        );
    }
    sql
}

/// Session GUC state: lowercased name -> value, sorted by name, no NULs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    entries: Vec<(String, String)>,
}

/// A capture result that is not the two-column text rows it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsError {
    /// A DataRow body ended before its declared contents.
    Truncated,
    /// A DataRow with other than 2 columns.
    ColumnCount(i16),
    /// A NULL name or value.
    Null,
    /// A name or value that is not UTF-8 or contains NUL.
    BadText,
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::Truncated => write!(f, "capture row is truncated"),
            ParamsError::ColumnCount(n) => write!(f, "capture row has {n} columns, not 2"),
            ParamsError::Null => write!(f, "capture row has a NULL column"),
            ParamsError::BadText => write!(f, "capture row is not UTF-8 text without NUL"),
        }
    }
}

impl std::error::Error for ParamsError {}

impl Params {
    /// From (name, value) pairs; names are lowercased, a later duplicate
    /// wins, and pairs containing NUL (which no GUC can hold) are dropped.
    pub fn from_capture_rows<'a>(rows: impl Iterator<Item = (&'a str, &'a str)>) -> Params {
        let mut entries: Vec<(String, String)> = rows
            .filter(|(name, value)| {
                let ok = !name.contains('\0') && !value.contains('\0');
                if !ok {
                    tracing::warn!(name = %name.escape_debug(), "GUC with NUL dropped");
                }
                ok
            })
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
            .collect();
        Params::sort_dedup(&mut entries);
        Params { entries }
    }

    /// From the bodies (after tag and length) of the DataRow messages the
    /// capture query returned: Int16 column count (2), then per column an
    /// Int32 length (-1 for NULL) and that many bytes
    /// ("protocol-message-formats", DataRow).
    pub fn from_data_rows(bodies: &[&[u8]]) -> Result<Params, ParamsError> {
        let mut entries = Vec::with_capacity(bodies.len());
        for body in bodies {
            let (name, value) = decode_row(body)?;
            entries.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        Params::sort_dedup(&mut entries);
        Ok(Params { entries })
    }

    /// Keeps the last of equal names (stable sort keeps input order).
    fn sort_dedup(entries: &mut Vec<(String, String)>) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(String, String)> = Vec::with_capacity(entries.len());
        for entry in entries.drain(..) {
            match deduped.last_mut() {
                Some(last) if last.0 == entry.0 => *last = entry,
                _ => deduped.push(entry),
            }
        }
        *entries = deduped;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `name` (case-insensitive). Names are stored folded, so
    /// `name` is folded as it is compared, without a copy: the relay asks at
    /// every release (`pgdog.pin`).
    pub fn get(&self, name: &str) -> Option<&str> {
        let folded = || name.bytes().map(|b| b.to_ascii_lowercase());
        self.entries
            .binary_search_by(|(n, _)| n.bytes().cmp(folded()))
            .ok()
            .map(|i| self.entries[i].1.as_str())
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Names with a dot: custom GUCs, which [`capture_sql`] must be told.
    pub fn custom_names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(n, _)| n).filter(|n| n.contains('.'))
    }

    /// This state as the client sees it: Postgres resets a GUC to the value
    /// the client's startup packet gave it, while on a pooled connection a
    /// reset goes to the pool's value. So every startup value missing from a
    /// capture is the client's startup value.
    pub fn with_startup_defaults(&self, startup: &Params) -> Params {
        let mut entries = self.entries.clone();
        for (name, value) in &startup.entries {
            if self.get(name).is_none() {
                entries.push((name.clone(), value.clone()));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Params { entries }
    }
}

fn decode_row(body: &[u8]) -> Result<(&str, &str), ParamsError> {
    let values = data_row_values(body).map_err(|_| ParamsError::Truncated)?;
    let [name, value] = values[..] else {
        return Err(ParamsError::ColumnCount(values.len() as i16));
    };
    Ok((text(name)?, text(value)?))
}

/// A column that must hold text without NUL.
fn text(value: Option<&[u8]>) -> Result<&str, ParamsError> {
    let text =
        std::str::from_utf8(value.ok_or(ParamsError::Null)?).map_err(|_| ParamsError::BadText)?;
    if text.contains('\0') {
        return Err(ParamsError::BadText);
    }
    Ok(text)
}

/// GUCs that `RESET ALL` leaves alone, so they are reset by name.
const NOT_RESET_BY_ALL: [&str; 2] = ["session_authorization", "role"];

/// One simple-protocol SQL string that turns a server connection whose
/// session state is `from` into `to`, or None when they are equal.
///
/// When `to` is empty: `RESET ALL` (plus `role`/`session_authorization`,
/// which it skips). Otherwise a single
/// `SELECT set_config('n', 'v', false), ...` where a NULL value resets a name
/// `to` lacks. Calls run left to right; `session_authorization` goes first
/// because setting it resets `role`. If any call fails the implicit
/// transaction rolls back and no GUC changes.
pub fn sync_sql(from: &Params, to: &Params) -> Option<String> {
    if from == to {
        return None;
    }
    if to.is_empty() {
        let mut sql = String::from("RESET ALL");
        for name in NOT_RESET_BY_ALL {
            if from.get(name).is_some() {
                sql.push_str("; RESET ");
                sql.push_str(name);
            }
        }
        return Some(sql);
    }
    let mut calls: Vec<(&str, Option<&str>)> = Vec::new();
    for (name, _) in from.iter() {
        if to.get(name).is_none() {
            calls.push((name, None));
        }
    }
    for (name, value) in to.iter() {
        if from.get(name) != Some(value) {
            calls.push((name, Some(value)));
        }
    }
    // Stable: session_authorization, then role, then the rest in name order.
    calls.sort_by_key(|(name, _)| match *name {
        "session_authorization" => 0,
        "role" => 1,
        _ => 2,
    });
    let mut sql = String::from("SELECT ");
    for (i, (name, value)) in calls.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("pg_catalog.set_config(");
        push_literal(&mut sql, name);
        sql.push_str(", ");
        match value {
            Some(value) => push_literal(&mut sql, value),
            None => sql.push_str("NULL"),
        }
        sql.push_str(", false)");
    }
    Some(sql)
}

/// Appends `text` as an `E'...'` literal: its meaning does not depend on
/// `standard_conforming_strings` ("sql-syntax-lexical", String Constants
/// With C-Style Escapes). Callers guarantee no NUL (Params never holds one).
fn push_literal(sql: &mut String, text: &str) {
    sql.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            _ => sql.push(c),
        }
    }
    sql.push('\'');
}

/// The GUC state a client's startup packet asks for: every parameter except
/// `user`, `database`, `replication`, protocol extensions (`_pq_.*`) and
/// `options`, whose `-c name=value` / `--name=value` switches are applied
/// first, as Postgres does ("libpq-connect", `options`; packet parameters
/// override them). Other postgres switches in `options` are ignored.
pub fn startup_params(params: &[(String, String)]) -> Params {
    let mut entries: Vec<(String, String)> = Vec::new();
    if let Some((_, options)) = params.iter().find(|(name, _)| name == "options") {
        options_switches(options, &mut entries);
    }
    for (name, value) in params {
        let skip = matches!(
            name.as_str(),
            "user" | "database" | "replication" | "options"
        ) || name.starts_with("_pq_.");
        if !skip {
            entries.push((name.clone(), value.clone()));
        }
    }
    Params::from_capture_rows(entries.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// Splits `options` like the server does: whitespace separates arguments,
/// a backslash takes the next character literally.
fn split_options(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return args;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    arg.push(escaped);
                }
            } else {
                arg.push(c);
            }
        }
        args.push(arg);
    }
}

/// Applies `-c name=value`, `-cname=value` and `--name=value`; in names, `-`
/// becomes `_` (both forms, as the server's long-option parsing does).
fn options_switches(options: &str, entries: &mut Vec<(String, String)>) {
    let args = split_options(options);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let setting = if let Some(long) = arg.strip_prefix("--") {
            Some(long)
        } else if arg == "-c" {
            args.next().map(String::as_str)
        } else {
            arg.strip_prefix("-c")
        };
        let Some(setting) = setting else {
            tracing::debug!(switch = %arg, "startup option ignored");
            continue;
        };
        match setting.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                entries.push((name.replace('-', "_"), value.to_owned()));
            }
            _ => tracing::debug!(switch = %arg, "startup option without a value ignored"),
        }
    }
}

/// True for the parameters PostgreSQL 15 reports with ParameterStatus at
/// startup and whenever they change ("protocol-flow", Asynchronous
/// Operations; the list was checked against a real 15 server).
pub fn is_reported(name: &str) -> bool {
    const REPORTED: [&str; 13] = [
        "application_name",
        "client_encoding",
        "datestyle",
        "default_transaction_read_only",
        "in_hot_standby",
        "integer_datetimes",
        "intervalstyle",
        "is_superuser",
        "server_encoding",
        "server_version",
        "session_authorization",
        "standard_conforming_strings",
        "timezone",
    ];
    REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_capture_rows(pairs.iter().copied())
    }

    fn row(name: &str, value: &str) -> Vec<u8> {
        let mut body = 2i16.to_be_bytes().to_vec();
        for text in [name, value] {
            body.extend_from_slice(&(text.len() as i32).to_be_bytes());
            body.extend_from_slice(text.as_bytes());
        }
        body
    }

    #[test]
    fn params_sorted_lowercased_last_wins() {
        let p = params(&[("Work_Mem", "1"), ("a.b", "x"), ("work_mem", "2")]);
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [("a.b", "x"), ("work_mem", "2")]
        );
        assert_eq!(p.get("WORK_MEM"), Some("2"));
        assert_eq!(p.custom_names().collect::<Vec<_>>(), ["a.b"]);
        assert_eq!(p, params(&[("work_mem", "2"), ("A.B", "x")]));
        assert!(params(&[]).is_empty());
        assert_eq!(params(&[("a", "x\0y"), ("b\0", "1")]), params(&[]));
    }

    #[test]
    fn data_rows_golden() {
        let body: &[u8] = b"\x00\x02\x00\x00\x00\x08DateStyle\x00\x00\x00\x08ISO, MDY";
        assert_eq!(
            Params::from_data_rows(&[body]),
            Err(ParamsError::Truncated),
            "name length 8 cuts 'DateStyle' short"
        );
        let body: &[u8] = b"\x00\x02\x00\x00\x00\x09DateStyle\x00\x00\x00\x08ISO, MDY";
        let p = Params::from_data_rows(&[body, &row("work_mem", "8192")]).unwrap();
        assert_eq!(
            p,
            params(&[("datestyle", "ISO, MDY"), ("work_mem", "8192")])
        );
        assert_eq!(Params::from_data_rows(&[]), Ok(Params::default()));
    }

    #[test]
    fn data_rows_errors() {
        let cases: &[(&[u8], ParamsError)] = &[
            (b"", ParamsError::Truncated),
            (b"\x00", ParamsError::Truncated),
            (b"\x00\x01\x00\x00\x00\x00", ParamsError::ColumnCount(1)),
            (
                b"\x00\x02\xff\xff\xff\xff\x00\x00\x00\x00",
                ParamsError::Null,
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a\xff\xff\xff\xff",
                ParamsError::Null,
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x05ab",
                ParamsError::Truncated,
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01\xff",
                ParamsError::BadText,
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01\x00",
                ParamsError::BadText,
            ),
            (
                b"\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x01bX",
                ParamsError::Truncated,
            ),
            (b"\x00\x02\x7f\xff\xff\xff", ParamsError::Truncated),
        ];
        for (body, want) in cases {
            assert_eq!(
                Params::from_data_rows(&[body]).as_ref(),
                Err(want),
                "{body:?}"
            );
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn sync_equal_is_none() {
        let a = params(&[("work_mem", "8192")]);
        assert_eq!(sync_sql(&a, &a.clone()), None);
        assert_eq!(sync_sql(&Params::default(), &Params::default()), None);
    }

    #[test]
    fn sync_to_empty_resets_all() {
        let from = params(&[("work_mem", "8192"), ("a.b", "1")]);
        assert_eq!(sync_sql(&from, &Params::default()).unwrap(), "RESET ALL");
        let from = params(&[("role", "r1"), ("session_authorization", "u")]);
        assert_eq!(
            sync_sql(&from, &Params::default()).unwrap(),
            "RESET ALL; RESET session_authorization; RESET role"
        );
    }

    #[test]
    fn sync_sets_and_resets_in_one_select() {
        let from = params(&[("work_mem", "8192"), ("a.b", "1"), ("timezone", "UTC")]);
        let to = params(&[
            ("search_path", "\"$user\", public"),
            ("timezone", "UTC"),
            ("role", "r1"),
            ("session_authorization", "u"),
            ("app.name", "it's a \\ test"),
        ]);
        assert_eq!(
            sync_sql(&from, &to).unwrap(),
            "SELECT pg_catalog.set_config(E'session_authorization', E'u', false), \
             pg_catalog.set_config(E'role', E'r1', false), \
             pg_catalog.set_config(E'a.b', NULL, false), \
             pg_catalog.set_config(E'work_mem', NULL, false), \
             pg_catalog.set_config(E'app.name', E'it''s a \\\\ test', false), \
             pg_catalog.set_config(E'search_path', E'\"$user\", public', false)"
        );
    }

    #[test]
    fn sync_sql_scans_as_gucs() {
        let from = params(&[("work_mem", "1")]);
        let to = params(&[("work_mem", "2; DROP TABLE x")]);
        let sql = sync_sql(&from, &to).unwrap();
        let effects = scan_statements(sql.as_bytes());
        assert!(effects.gucs);
        assert_eq!(effects.statements, 1, "the value stays inside its literal");
    }

    #[test]
    fn capture_sql_with_custom_names() {
        assert_eq!(capture_sql([]), CAPTURE_SQL);
        assert_eq!(capture_sql(["work_mem", "a\0.b"]), CAPTURE_SQL);
        let sql = capture_sql(["app.user_id", "it's.x"]);
        assert!(sql.starts_with(CAPTURE_SQL));
        assert!(sql.contains("unnest(ARRAY[E'app.user_id', E'it''s.x']::text[])"));
        assert_eq!(scan_statements(sql.as_bytes()).statements, 1);
    }

    fn startup(pairs: &[(&str, &str)]) -> Params {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        startup_params(&pairs)
    }

    #[test]
    fn startup_params_skip_login_fields() {
        let p = startup(&[
            ("user", "u"),
            ("database", "d"),
            ("replication", "database"),
            ("_pq_.compression", "on"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
        ]);
        assert_eq!(
            p,
            params(&[
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
                ("datestyle", "ISO"),
            ])
        );
    }

    #[test]
    fn startup_options_parsed_like_postgres() {
        let p = startup(&[(
            "options",
            "  -c work_mem=3MB --geqo-effort=4 -cstatement_timeout=5s \
             -c search_path=a\\,\\ b -c geqo-threshold=9 -B 100 -c broken --x",
        )]);
        assert_eq!(
            p,
            params(&[
                ("geqo_effort", "4"),
                ("geqo_threshold", "9"),
                ("search_path", "a, b"),
                ("statement_timeout", "5s"),
                ("work_mem", "3MB"),
            ])
        );
        // Packet parameters override options.
        let p = startup(&[
            ("application_name", "packet"),
            ("options", "-c application_name=options -c x.y=1\\\\"),
        ]);
        assert_eq!(p, params(&[("application_name", "packet"), ("x.y", "1\\")]));
        assert!(startup(&[("options", "")]).is_empty());
        assert!(startup(&[("options", "-c")]).is_empty());
        assert!(startup(&[("options", "trailing\\")]).is_empty());
    }

    #[test]
    fn startup_defaults_fill_missing_names() {
        let start = params(&[("application_name", "psql"), ("work_mem", "1MB")]);
        let captured = params(&[("work_mem", "2048"), ("search_path", "a")]);
        assert_eq!(
            captured.with_startup_defaults(&start),
            params(&[
                ("application_name", "psql"),
                ("search_path", "a"),
                ("work_mem", "2048"),
            ])
        );
        assert_eq!(Params::default().with_startup_defaults(&start), start);
    }

    #[test]
    fn reported_parameters() {
        for name in [
            "server_version",
            "server_encoding",
            "client_encoding",
            "application_name",
            "default_transaction_read_only",
            "in_hot_standby",
            "is_superuser",
            "session_authorization",
            "DateStyle",
            "IntervalStyle",
            "TimeZone",
            "integer_datetimes",
            "standard_conforming_strings",
            "TIMEZONE",
        ] {
            assert!(is_reported(name), "{name}");
        }
        for name in [
            "search_path",
            "work_mem",
            "role",
            "",
            "timezone_abbreviations",
        ] {
            assert!(!is_reported(name), "{name}");
        }
    }
}
