//! Scans of the byte streams the relay forwards: where client requests end
//! and what they will change, and which server messages the relay must see
//! (ReadyForQuery, errors, COPY starts) among those it just passes on.
//!
//! Must not: do I/O or hold session state; the relay owns both and passes in
//! what a scan needs.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::prepared::{Books, ReplyPlan, Verdict};
use crate::protocol::backend::{BackendKind, BackendMessage, TransactionStatus};
use crate::protocol::frontend::FrontendKind;
use crate::protocol::{frame, ProtocolError, DEFAULT_MAX_MESSAGE_LEN};
use crate::session::sql_scan::{custom_guc_names, scan_statements};

/// Postgres never sends a message over 1 GiB (MaxAllocSize).
const MAX_SERVER_MESSAGE_LEN: usize = 1 << 30;

/// Complete client messages at the front of the buffer, as far as they go.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ClientBatch {
    /// Bytes of complete messages before any Terminate.
    pub len: usize,
    /// Messages that each earn a ReadyForQuery: Query, Sync, FunctionCall.
    pub sync_points: u32,
    pub flush: bool,
    /// Extended-protocol messages after the last sync point.
    pub unsynced: bool,
    pub terminate: bool,
    /// A CopyDone or CopyFail ends a COPY FROM STDIN.
    pub copy_end: bool,
}

pub(super) fn scan_client(buf: &[u8], unsynced: bool) -> Result<ClientBatch, ProtocolError> {
    let mut batch = ClientBatch {
        unsynced,
        ..ClientBatch::default()
    };
    let mut offset = 0;
    while let Some(header) = frame::header(&buf[offset..], DEFAULT_MAX_MESSAGE_LEN)? {
        if offset + header.total_len > buf.len() {
            break;
        }
        match FrontendKind::from_tag(header.tag)? {
            FrontendKind::Query | FrontendKind::Sync | FrontendKind::FunctionCall => {
                batch.sync_points += 1;
                batch.unsynced = false;
            }
            FrontendKind::Flush => batch.flush = true,
            FrontendKind::Terminate => {
                batch.terminate = true;
                break;
            }
            FrontendKind::Parse
            | FrontendKind::Bind
            | FrontendKind::Describe
            | FrontendKind::Execute
            | FrontendKind::Close => batch.unsynced = true,
            FrontendKind::CopyData => {}
            FrontendKind::CopyDone | FrontendKind::CopyFail => batch.copy_end = true,
            FrontendKind::Password => {
                return Err(ProtocolError::Malformed("password message after login"));
            }
        }
        offset += header.total_len;
        batch.len = offset;
    }
    Ok(batch)
}

/// What stopped a scan of server bytes.
pub(super) enum ServerEvent {
    /// Nothing more to look at now.
    More,
    /// A FATAL/PANIC ErrorResponse of this length starts at the scan end: the
    /// server is about to close.
    Fatal(usize),
}

/// Walks server messages from the front of `buf`: returns how many bytes can be
/// forwarded now and why it stopped. Messages the proxy must read
/// (ReadyForQuery, ErrorResponse) are forwarded only once whole; others are
/// forwarded as their bytes arrive (`partial` remembers the rest of one).
pub(super) fn scan_server(
    buf: &[u8],
    partial: &mut usize,
    pending: &mut u32,
    status: &mut TransactionStatus,
    copy_in_starts: &mut u32,
) -> (usize, Result<ServerEvent, ProtocolError>) {
    let mut offset = (*partial).min(buf.len());
    *partial -= offset;
    if *partial > 0 {
        return (offset, Ok(ServerEvent::More));
    }
    loop {
        let header = match frame::header(&buf[offset..], MAX_SERVER_MESSAGE_LEN) {
            Ok(Some(header)) => header,
            Ok(None) => return (offset, Ok(ServerEvent::More)),
            Err(error) => return (offset, Err(error)),
        };
        let available = buf.len() - offset;
        let kind = match BackendKind::from_tag(header.tag) {
            Ok(kind) => kind,
            Err(error) => return (offset, Err(error)),
        };
        match kind {
            BackendKind::ReadyForQuery | BackendKind::ErrorResponse => {
                if header.total_len > available {
                    return (offset, Ok(ServerEvent::More));
                }
                let message = &buf[offset..offset + header.total_len];
                match read_reply(message, status, pending) {
                    Ok(false) => {}
                    Ok(true) => return (offset, Ok(ServerEvent::Fatal(header.total_len))),
                    Err(error) => return (offset, Err(error)),
                }
                offset += header.total_len;
            }
            _ => {
                if kind == BackendKind::CopyInResponse {
                    *copy_in_starts += 1;
                }
                if header.total_len > available {
                    *partial = header.total_len - available;
                    return (buf.len(), Ok(ServerEvent::More));
                }
                offset += header.total_len;
            }
        }
    }
}

/// Takes in a whole ReadyForQuery (the transaction status, one reply fewer
/// owed) or ErrorResponse; true when the error is FATAL or PANIC, after which
/// the server closes.
fn read_reply(
    message: &[u8],
    status: &mut TransactionStatus,
    pending: &mut u32,
) -> Result<bool, ProtocolError> {
    match BackendMessage::decode(message)? {
        BackendMessage::ReadyForQuery(new_status) => {
            *status = new_status;
            *pending = pending.saturating_sub(1);
            Ok(false)
        }
        BackendMessage::ErrorResponse(fields) => {
            Ok(matches!(fields.severity(), Some("FATAL") | Some("PANIC")))
        }
        _ => Ok(false),
    }
}

/// The books a planned scan keeps, passed together.
pub(super) struct ServerScan<'a> {
    pub partial: &'a mut usize,
    pub pending: &'a mut u32,
    pub status: &'a mut TransactionStatus,
    pub copy_in_starts: &'a mut u32,
}

/// As `scan_server`, while a reply plan is in force (prepared statements were
/// rewritten): every whole message goes through the plan, which writes what
/// the client sees of it to `out`. Rows may still go out before they are
/// whole when the plan forwards them. Returns the bytes consumed.
pub(super) fn scan_server_planned(
    buf: &[u8],
    scan: ServerScan<'_>,
    plan: &mut ReplyPlan,
    books: &mut Books<'_>,
    out: &mut BytesMut,
    verdict: &mut Verdict,
) -> (usize, Result<ServerEvent, ProtocolError>) {
    let mut offset = (*scan.partial).min(buf.len());
    out.extend_from_slice(&buf[..offset]);
    *scan.partial -= offset;
    if *scan.partial > 0 {
        return (offset, Ok(ServerEvent::More));
    }
    loop {
        plan.answer_ready(out);
        let header = match frame::header(&buf[offset..], MAX_SERVER_MESSAGE_LEN) {
            Ok(Some(header)) => header,
            Ok(None) => return (offset, Ok(ServerEvent::More)),
            Err(error) => return (offset, Err(error)),
        };
        let kind = match BackendKind::from_tag(header.tag) {
            Ok(kind) => kind,
            Err(error) => return (offset, Err(error)),
        };
        let available = buf.len() - offset;
        if header.total_len > available {
            let rows = matches!(kind, BackendKind::DataRow | BackendKind::CopyData);
            if rows && (plan.is_empty() || plan.forwards_rows()) {
                out.extend_from_slice(&buf[offset..]);
                *scan.partial = header.total_len - available;
                return (buf.len(), Ok(ServerEvent::More));
            }
            return (offset, Ok(ServerEvent::More));
        }
        let message = &buf[offset..offset + header.total_len];
        match kind {
            BackendKind::ReadyForQuery | BackendKind::ErrorResponse => {
                match read_reply(message, scan.status, scan.pending) {
                    Ok(false) => {}
                    Ok(true) => return (offset, Ok(ServerEvent::Fatal(header.total_len))),
                    Err(error) => return (offset, Err(error)),
                }
            }
            BackendKind::CopyInResponse => *scan.copy_in_starts += 1,
            _ => {}
        }
        let step = plan.on_message(kind, message, books, out);
        verdict.uncertain |= step.uncertain;
        offset += header.total_len;
    }
}

/// What a batch leaves behind past its transaction on the server connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Leftovers {
    /// Settings (SET, RESET, set_config, DISCARD): captured for the client
    /// when the connection is released, then carried to its next ones.
    pub settings: bool,
    /// State that is not carried (LISTEN, SQL PREPARE, temporary objects,
    /// WITH HOLD cursors, a named Parse that is not renamed): the connection
    /// is reset (DISCARD ALL) before reuse.
    pub other: bool,
    /// Session advisory locks taken or released: whether the client still
    /// holds any decides whether it keeps (is pinned to) the connection.
    pub advisory: bool,
    /// DISCARD ALL: the client's LISTENs end too.
    pub discard_all: bool,
    /// A statement starts with ROLLBACK or ABORT (not ROLLBACK TO/PREPARED):
    /// the transaction ending next is rolled back.
    pub rollback: bool,
}

impl Leftovers {
    fn add(&mut self, other: Leftovers) {
        self.settings |= other.settings;
        self.other |= other.other;
        self.advisory |= other.advisory;
        self.discard_all |= other.discard_all;
        self.rollback |= other.rollback;
    }
}

/// Records how each forwarded request ends (see `Relay::request_ends`) and
/// says what the messages leave behind; names of custom settings they touch
/// go to `custom_names`. The bytes were validated by `scan_client`.
/// `renamed`: the batch goes through the prepared-statement rewriter;
/// `sql_statements`: which also renames SQL `PREPARE` (`full`).
pub(super) fn note_requests(
    buf: &[u8],
    ends: &mut VecDeque<bool>,
    renamed: bool,
    sql_statements: bool,
    custom_names: &mut Vec<String>,
) -> Leftovers {
    let mut left = Leftovers::default();
    let mut offset = 0;
    while let Ok(Some(header)) = frame::header(&buf[offset..], DEFAULT_MAX_MESSAGE_LEN) {
        let end = offset + header.total_len;
        if end > buf.len() {
            break;
        }
        let body = &buf[offset + frame::HEADER_LEN..end];
        match FrontendKind::from_tag(header.tag) {
            Ok(FrontendKind::Query) => {
                ends.push_back(false);
                let sql = body.strip_suffix(&[0]).unwrap_or(body);
                let mut found = leftovers(sql, custom_names);
                // A PREPARE or DEALLOCATE the rewriter carries out on the
                // client's names leaves only statements sleddog keeps books on.
                if found.other && renamed && crate::prepared::handles_query(sql, sql_statements) {
                    found.other = false;
                }
                left.add(found);
            }
            Ok(FrontendKind::FunctionCall) => ends.push_back(false),
            Ok(FrontendKind::Sync) => ends.push_back(true),
            Ok(FrontendKind::Parse) => {
                // A named prepared statement outlives the transaction, unless
                // sleddog renames it (the connection keeps those on purpose).
                left.other |= !renamed && body.first().is_some_and(|b| *b != 0);
                // A statement run through the extended protocol counts too.
                let name_end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                let sql = body.get(name_end + 1..).unwrap_or_default();
                let sql_end = sql.iter().position(|b| *b == 0).unwrap_or(sql.len());
                left.add(leftovers(&sql[..sql_end], custom_names));
            }
            _ => {}
        }
        offset = end;
    }
    left
}

/// What SQL text may leave behind past its transaction; every statement of
/// a multi-statement string is looked at, in one pass without allocation
/// (`sql_scan`) unless it names custom settings.
fn leftovers(sql: &[u8], custom_names: &mut Vec<String>) -> Leftovers {
    let effects = scan_statements(sql);
    if effects.custom_gucs {
        let before = custom_names.len();
        custom_guc_names(sql, custom_names);
        // Keep each name once.
        let mut i = before;
        while i < custom_names.len() {
            if custom_names[..i].contains(&custom_names[i]) {
                custom_names.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    Leftovers {
        // `SET pgdog.pin` is a custom setting like any other: captured, it
        // pins the client while true.
        settings: effects.gucs || effects.custom_gucs || effects.discard_all,
        other: effects.prepared_sql || effects.listen || effects.temp_or_hold,
        advisory: effects.advisory_lock || effects.advisory_unlock,
        discard_all: effects.discard_all,
        rollback: starts_rollback(sql),
    }
}

/// `ROLLBACK`/`ABORT` (any form but `ROLLBACK TO` and `ROLLBACK PREPARED`) as
/// the first statement.
fn starts_rollback(sql: &[u8]) -> bool {
    let (word, rest) = first_word(sql);
    let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
    if is(b"abort") {
        return true;
    }
    if !is(b"rollback") {
        return false;
    }
    let (next, _) = first_word(rest);
    let next_is = |w: &[u8]| next.eq_ignore_ascii_case(w);
    if next_is(b"work") || next_is(b"transaction") {
        let (after, _) = first_word(first_word(rest).1);
        return !after.eq_ignore_ascii_case(b"to");
    }
    !(next_is(b"to") || next_is(b"prepared"))
}

/// The first run of ASCII letters after leading white space, and what follows.
fn first_word(sql: &[u8]) -> (&[u8], &[u8]) {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sql.len());
    let end = sql[start..]
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .map_or(sql.len(), |n| start + n);
    (&sql[start..end], &sql[end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn msg(out: &mut BytesMut, tag: u8, body: &[u8]) {
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(body);
    }

    #[test]
    fn client_batch_counts_sync_points_and_unsynced() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"\0select 1\0\0\0");
        msg(&mut buf, b'B', b"\0\0\0\0\0\0\0\0");
        msg(&mut buf, b'E', b"\0\0\0\0\0");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.sync_points, 0);
        assert!(batch.unsynced);
        assert!(!batch.flush);
        msg(&mut buf, b'S', b"");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.sync_points, 1);
        assert!(!batch.unsynced);
        assert_eq!(batch.len, buf.len());
    }

    #[test]
    fn client_batch_stops_at_incomplete_and_terminate() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'Q', b"select 1\0");
        let whole = buf.len();
        msg(&mut buf, b'X', b"");
        msg(&mut buf, b'Q', b"select 2\0");
        let batch = scan_client(&buf, false).unwrap();
        assert_eq!(batch.len, whole);
        assert!(batch.terminate);
        let batch = scan_client(&buf[..whole + 2], false).unwrap();
        assert_eq!(batch.len, whole);
        assert!(!batch.terminate);
    }

    #[test]
    fn rollback_statements() {
        for sql in [
            "ROLLBACK",
            "rollback work",
            "abort",
            " Rollback transaction;",
        ] {
            assert!(starts_rollback(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "rollback to a",
            "ROLLBACK WORK TO SAVEPOINT a",
            "rollback prepared 'x'",
            "commit",
            "select 1",
        ] {
            assert!(!starts_rollback(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn session_changing_statements() {
        for sql in [
            "SET search_path TO a",
            "  set statement_timeout = 5",
            "RESET ALL",
            "listen chan",
            "PREPARE p AS SELECT 1",
            "create temp table t (id int)",
            "CREATE TEMPORARY TABLE t (id int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DISCARD PLANS",
            "select set_config('statement_timeout', '11s', false)",
            "select 1; set application_name = 'x'",
            "select pg_advisory_lock(1)",
        ] {
            assert_ne!(
                leftovers(sql.as_bytes(), &mut Vec::new()),
                Leftovers::default(),
                "{sql}"
            );
        }
        for sql in [
            "SET LOCAL search_path TO a",
            "select 1",
            "SELECT * FROM settings",
            "create table t (id int)",
            "DECLARE c CURSOR FOR SELECT 1",
            "insert into listen values (1)",
            "",
        ] {
            assert_eq!(
                leftovers(sql.as_bytes(), &mut Vec::new()),
                Leftovers::default(),
                "{sql}"
            );
        }
    }

    #[test]
    fn requests_ends_and_named_parse_are_noted() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"s1\0select 1\0\0\0");
        msg(&mut buf, b'S', b"");
        msg(&mut buf, b'Q', b"select 1\0");
        let mut ends = VecDeque::new();
        assert!(note_requests(&buf, &mut ends, false, false, &mut Vec::new()).other);
        assert!(!note_requests(&buf, &mut VecDeque::new(), true, false, &mut Vec::new()).other);
        assert_eq!(ends, [true, false]);
        let mut buf = BytesMut::new();
        msg(&mut buf, b'P', b"\0select 1\0\0\0");
        msg(&mut buf, b'S', b"");
        assert!(!note_requests(&buf, &mut ends, false, false, &mut Vec::new()).other);
    }

    #[test]
    fn client_batch_rejects_unknown_tag() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'!', b"");
        assert!(scan_client(&buf, false).is_err());
    }

    #[test]
    fn server_scan_forwards_partial_rows_but_waits_for_whole_ready_for_query() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'D', &[0u8; 100]);
        msg(&mut buf, b'C', b"SELECT 1\0");
        msg(&mut buf, b'Z', b"I");
        let (mut partial, mut pending, mut status) = (0, 1, TransactionStatus::InTransaction);
        // Half a DataRow: forwarded, 50-odd bytes still owed.
        let (len, event) = scan_server(&buf[..60], &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, 60);
        assert!(matches!(event, Ok(ServerEvent::More)));
        assert_eq!(partial, 105 - 60);
        // The rest minus the last byte of ReadyForQuery: stops before it.
        let rest = &buf[60..buf.len() - 1];
        let (len, _) = scan_server(rest, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, rest.len() - 5);
        assert_eq!(pending, 1);
        let rest = &buf[60 + len..];
        let (len, _) = scan_server(rest, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, 6);
        assert_eq!(pending, 0);
        assert_eq!(status, TransactionStatus::Idle);
    }

    #[test]
    fn server_scan_stops_before_fatal() {
        let mut buf = BytesMut::new();
        msg(&mut buf, b'N', b"SNOTICE\0C00000\0Mhi\0\0");
        let notice = buf.len();
        msg(&mut buf, b'E', b"SFATAL\0VFATAL\0C57P01\0Mbye\0\0");
        let (mut partial, mut pending, mut status) = (0, 1, TransactionStatus::Idle);
        let (len, event) = scan_server(&buf, &mut partial, &mut pending, &mut status, &mut 0);
        assert_eq!(len, notice);
        match event {
            Ok(ServerEvent::Fatal(n)) => assert_eq!(n, buf.len() - notice),
            _ => panic!("expected a fatal event"),
        }
    }
}
