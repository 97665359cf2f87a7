//! The I/O of a cross-shard request: the same request (rewritten per
//! `fanout::plan`) goes to one server connection per shard, all driven at
//! once on the client's core, and each reply is read whole, up to its last
//! ReadyForQuery. `fanout::assemble` then makes the client's reply of them.
//! Must not: decide routing or merge rows.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use bytes::{Buf, BytesMut};

use crate::fanout::assemble::{Op, Rows, RowsError};
use crate::fanout::merge::MAX_HELD_BYTES;
use crate::pool::server_conn::{self, read_more, CancelKey};
use crate::pool::ServerConn;
use crate::protocol::backend::BackendKind;
use crate::protocol::frame;
use crate::protocol::frontend::{BindParts, DescribeTarget, FrontendMessage};
use crate::protocol::write;
use crate::rt::{self, AsyncWriteExt};

/// Server messages can be larger than client ones (a wide row).
const MAX_SERVER_MESSAGE_LEN: usize = 1 << 30;

/// One exchange failed: the connection cannot be reused.
#[derive(Debug)]
pub struct ExchangeError {
    pub shard: usize,
    pub message: String,
}

/// How the shards' replies to one request are read (`exchange`), shared
/// by the shards' exchanges, which run at once on the client's core (its
/// cells are borrowed only between awaits).
///
/// With `rows` (a merge), the request's one result goes into it as it
/// arrives: its RowDescriptions and DataRows are fed, the rows dropped from
/// the reply, so memory is the merge's. Whatever is kept for
/// `fanout::assemble` (everything else, and every row when there is no
/// merge) counts against `MAX_HELD_BYTES`. After the first error (the
/// merge's, or the replies past that cap) the replies are read to their end
/// without their rows; a merge's error also cancels what the shards still
/// run (`cancels`: empty inside a transaction, where a late cancel could
/// reach the transaction's next statement).
pub struct Tap<'r, R: Rows> {
    rows: Option<RefCell<&'r mut R>>,
    held: Cell<usize>,
    limit_bytes: usize,
    error: RefCell<Option<RowsError>>,
    cancels: &'r [CancelKey],
    cancel_timeout: Duration,
}

impl<'r, R: Rows> Tap<'r, R> {
    /// `cancels`: the shards' keys, sent at a merge's error.
    pub fn new(
        rows: Option<&'r mut R>,
        cancels: &'r [CancelKey],
        cancel_timeout: Duration,
    ) -> Self {
        Tap {
            rows: rows.map(RefCell::new),
            held: Cell::new(0),
            limit_bytes: MAX_HELD_BYTES,
            error: RefCell::new(None),
            cancels,
            cancel_timeout,
        }
    }

    /// Holds at most `limit_bytes` of replies instead of `MAX_HELD_BYTES`.
    #[cfg(test)]
    fn with_limit(mut self, limit_bytes: usize) -> Self {
        self.limit_bytes = limit_bytes;
        self
    }

    /// The first error, if the exchange had one.
    pub fn into_error(self) -> Option<RowsError> {
        self.error.into_inner()
    }

    fn failed(&self) -> bool {
        self.error.borrow().is_some()
    }

    fn feed(&self, result: Result<(), RowsError>) {
        if let Err(error) = result {
            self.fail(error, true);
        }
    }

    /// Counts `len` bytes kept for assembling.
    fn hold(&self, len: usize) {
        let held = self.held.get() + len;
        self.held.set(held);
        if held > self.limit_bytes && !self.failed() {
            // Not cancelled: the request may hold writes that some shards
            // have committed; every shard finishes, its rows dropped.
            let cancel = false;
            self.fail(
                RowsError {
                    sqlstate: "54000",
                    message: format!(
                        "the cross-shard reply is too large to hold in memory (over {} MiB); \
                     send its statements as separate requests",
                        self.limit_bytes / (1024 * 1024)
                    ),
                },
                cancel,
            );
        }
    }

    fn fail(&self, error: RowsError, cancel: bool) {
        *self.error.borrow_mut() = Some(error);
        if !cancel {
            return;
        }
        for key in self.cancels {
            server_conn::cancel_in_background(key, self.cancel_timeout);
        }
    }
}

/// Where one shard's reply stands, for its tap.
#[derive(Default)]
struct Tapping {
    /// The result ended (CommandComplete, EmptyQueryResponse, ErrorResponse,
    /// PortalSuspended): later rows are not the merge's.
    result_over: bool,
    /// The last message was a ParameterDescription, so a RowDescription now
    /// describes the statement (format codes all zero), not the result.
    after_parameters: bool,
}

impl Tapping {
    /// Handles one message of `shard`'s reply; true when it is kept.
    fn message<R: Rows>(
        &mut self,
        tap: &Tap<'_, R>,
        shard: usize,
        kind: BackendKind,
        body: &[u8],
    ) -> bool {
        let after_parameters = std::mem::replace(
            &mut self.after_parameters,
            kind == BackendKind::ParameterDescription,
        );
        let keep = match (kind, &tap.rows) {
            (BackendKind::DataRow, Some(rows)) if !self.result_over => {
                if !tap.failed() {
                    let fed = rows.borrow_mut().row(shard, body);
                    tap.feed(fed);
                }
                false
            }
            (BackendKind::DataRow, _) => !tap.failed(),
            (BackendKind::RowDescription, Some(rows)) if !self.result_over && !after_parameters => {
                if !tap.failed() {
                    let fed = rows.borrow_mut().description(shard, body);
                    tap.feed(fed);
                }
                true
            }
            (
                BackendKind::CommandComplete
                | BackendKind::EmptyQueryResponse
                | BackendKind::ErrorResponse
                | BackendKind::PortalSuspended,
                _,
            ) => {
                self.result_over = true;
                true
            }
            _ => true,
        };
        if keep {
            tap.hold(5 + body.len());
        }
        keep
    }
}

/// The kind and length of the whole server message at the start of `buf`
/// (None until all of it is there). Err: an invalid message, or COPY, which
/// a cross-shard request cannot carry.
fn whole_message(buf: &[u8]) -> Result<Option<(BackendKind, usize)>, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("the server sent an invalid message: {e}");
    let Some(header) = frame::header(buf, MAX_SERVER_MESSAGE_LEN).map_err(|e| invalid(&e))? else {
        return Ok(None);
    };
    if header.total_len > buf.len() {
        return Ok(None);
    }
    let kind = BackendKind::from_tag(header.tag).map_err(|e| invalid(&e))?;
    if matches!(
        kind,
        BackendKind::CopyInResponse | BackendKind::CopyOutResponse
    ) {
        return Err("COPY is not supported across shards yet".to_owned());
    }
    Ok(Some((kind, header.total_len)))
}

/// Writes `request` to `conn` and reads until `ready` ReadyForQuery
/// messages have arrived, through `tap`; returns what it kept of them (the
/// connection's buffer is left with whatever followed). Yields the core
/// between reads when this task has used its time slice.
async fn exchange_one<R: Rows>(
    conn: &mut ServerConn,
    request: &[u8],
    ready: u32,
    tap: &Tap<'_, R>,
    shard: usize,
) -> Result<BytesMut, String> {
    conn.stream
        .write_all(request)
        .await
        .map_err(|e| format!("could not write to the server: {e}"))?;
    let mut kept = BytesMut::new();
    let mut tapping = Tapping::default();
    let mut seen = 0;
    loop {
        while let Some((kind, len)) = whole_message(&conn.buf)? {
            let message = &conn.buf[..len];
            if tapping.message(tap, shard, kind, &message[5..]) {
                kept.extend_from_slice(message);
            }
            conn.buf.advance(len);
            if kind == BackendKind::ReadyForQuery {
                seen += 1;
                if seen == ready {
                    return Ok(kept);
                }
            }
        }
        rt::yield_if_needed().await;
        match read_more(&mut conn.stream, &mut conn.buf).await {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("server closed the connection".to_owned()),
            Err(e) => return Err(format!("could not read from the server: {e}")),
        }
    }
}

/// A merge after a tapped exchange: its descriptions and rows were fed as
/// they arrived, so `fanout::assemble` only reads the client's description
/// and the merged rows out of it.
pub struct Fed<'r, R: Rows>(pub &'r mut R);

impl<R: Rows> Rows for Fed<'_, R> {
    fn description(&mut self, _shard: usize, _body: &[u8]) -> Result<(), RowsError> {
        Ok(())
    }
    fn client_description(&self, out: &mut BytesMut) {
        self.0.client_description(out);
    }
    fn row(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
        self.0.row(shard, body)
    }
    fn finish(&mut self, out: &mut BytesMut) -> Result<u64, RowsError> {
        self.0.finish(out)
    }
}

/// Sends `request` to every connection, all at once, and reads each reply
/// through `tap`.
pub async fn exchange<R: Rows>(
    conns: Vec<&mut ServerConn>,
    request: &[u8],
    ready: u32,
    tap: &Tap<'_, R>,
) -> Result<Vec<BytesMut>, ExchangeError> {
    let futures: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(shard, conn)| exchange_one(conn, request, ready, tap, shard))
        .collect();
    let mut replies = Vec::with_capacity(futures.len());
    for (shard, result) in rt::join_all(futures).await.into_iter().enumerate() {
        match result {
            Ok(reply) => replies.push(reply),
            Err(message) => return Err(ExchangeError { shard, message }),
        }
    }
    Ok(replies)
}

/// The shards' request for a client batch, and what the client is owed.
#[derive(Debug, Default)]
pub struct Fanned {
    /// The request every shard gets.
    pub request: BytesMut,
    pub ops: Vec<Op>,
    /// ReadyForQuery messages every shard will send.
    pub ready: u32,
    /// Bind parameters of the request (for LIMIT $n), as (format, value).
    pub params: Vec<(i16, Option<Vec<u8>>)>,
    /// The client's columns of a merged result (`usize::MAX`: all).
    pub visible: usize,
}

/// How a batch's text maps to what the shards run: `shard_sql(client
/// sql)` (the rewritten text, or the same), and a Bind of a named
/// statement's text and types.
pub trait StatementSource {
    fn shard_sql(&self, sql: &str) -> String;
    fn named(&self, name: &str) -> Option<(String, Vec<u32>)>;
}

/// Builds the shards' request for the client's messages: every statement
/// and portal becomes the unnamed one, a Bind of a statement prepared in an
/// earlier request gets its Parse first (hidden from the client), and an
/// Execute without a Describe gets one (hidden), so the merge knows the
/// columns. Err: a message this path cannot carry.
pub fn build<'m>(
    messages: impl IntoIterator<Item = &'m [u8]>,
    source: &impl StatementSource,
) -> Result<Fanned, String> {
    let mut fanned = Fanned::default();
    let mut parsed_here: Option<String> = None;
    let mut described = false;
    for message in messages {
        let decoded = FrontendMessage::decode(message).map_err(|e| e.to_string())?;
        match decoded {
            FrontendMessage::Query { sql } => {
                if crate::router::first_word(sql).is_some_and(|w| w.eq_ignore_ascii_case("copy")) {
                    return Err("COPY across shards is not supported yet".to_owned());
                }
                write::query(&mut fanned.request, &source.shard_sql(sql));
                fanned.ops.push(Op::Query);
                fanned.ready += 1;
            }
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                write::parse_typed(&mut fanned.request, &source.shard_sql(sql), &param_types);
                fanned.ops.push(Op::Parse { visible: true });
                parsed_here = Some(name.to_owned());
            }
            FrontendMessage::Bind { statement, .. } => {
                let parts = BindParts::decode(message).map_err(|e| e.to_string())?;
                if parsed_here.as_deref() != Some(statement) {
                    let (sql, types) = source.named(statement).ok_or_else(|| {
                        format!("prepared statement \"{statement}\" does not exist")
                    })?;
                    write::parse_typed(&mut fanned.request, &source.shard_sql(&sql), &types);
                    fanned.ops.push(Op::Parse { visible: false });
                }
                write::bind_values(
                    &mut fanned.request,
                    &parts.param_formats,
                    &parts.params,
                    &parts.result_formats,
                );
                fanned.params = (0..parts.params.len())
                    .map(|n| (parts.param_format(n), parts.params[n].map(<[u8]>::to_vec)))
                    .collect();
                fanned.ops.push(Op::Bind);
                described = false;
            }
            FrontendMessage::Describe { target, .. } => {
                let portal = target == DescribeTarget::Portal;
                write::describe_unnamed(&mut fanned.request, portal);
                fanned.ops.push(if portal {
                    described = true;
                    Op::DescribePortal { visible: true }
                } else {
                    Op::DescribeStatement
                });
            }
            FrontendMessage::Execute { max_rows, .. } => {
                if max_rows > 0 {
                    // Portal suspension does not carry across shards.
                    return Err(
                        "an Execute with a row limit is not supported across shards".to_owned()
                    );
                }
                if !described {
                    write::describe_unnamed(&mut fanned.request, true);
                    fanned.ops.push(Op::DescribePortal { visible: false });
                }
                write::execute_unnamed(&mut fanned.request);
                fanned.ops.push(Op::Execute);
            }
            FrontendMessage::Sync => {
                write::sync(&mut fanned.request);
                fanned.ops.push(Op::Sync);
                fanned.ready += 1;
            }
            // The shards use the unnamed statement and portal: a Close is
            // answered in its place, and the session forgets the name.
            FrontendMessage::Close { .. } => fanned.ops.push(Op::Close),
            FrontendMessage::Flush => {}
            other => {
                return Err(format!(
                    "{:?} is not supported in a cross-shard request",
                    other.kind()
                ))
            }
        }
    }
    Ok(fanned)
}

/// Whether the request's replies can be streamed: one result (a single
/// Execute, or a Query of one statement) and nothing to merge. The rows
/// then go to the client as each shard sends them, one shard after the
/// other, while the others' wait in their sockets.
pub fn streamable(ops: &[Op], single_statement: bool) -> bool {
    match ops {
        [Op::Query] => single_statement,
        _ => {
            ops.iter().filter(|op| **op == Op::Execute).count() == 1
                && ops.iter().filter(|op| **op == Op::Sync).count() == 1
                && ops.last() == Some(&Op::Sync)
                && !ops
                    .iter()
                    .any(|op| matches!(op, Op::Query | Op::Close | Op::DescribeStatement))
        }
    }
}

/// The client's reply to a streamed request, built as the shards' messages
/// arrive: shard 0's replies before the rows, every shard's rows, then one
/// CommandComplete (counts summed) or the first error, and one
/// ReadyForQuery. Pure; `Streamer::message` is fed each whole message.
pub struct Streamer {
    ops: Vec<Op>,
    /// Per shard being read: the op its next reply answers.
    op: usize,
    shard: usize,
    first_description: Option<Vec<u8>>,
    rows: u64,
    tags: Vec<String>,
    empty: bool,
    error: Option<Vec<u8>>,
    status: crate::protocol::backend::TransactionStatus,
    /// The shard's reply is over (its ReadyForQuery came).
    pub done: bool,
}

impl Streamer {
    pub fn new(ops: Vec<Op>) -> Streamer {
        Streamer {
            ops,
            op: 0,
            shard: 0,
            first_description: None,
            rows: 0,
            tags: Vec::new(),
            empty: false,
            error: None,
            status: crate::protocol::backend::TransactionStatus::Idle,
            done: false,
        }
    }

    /// The next shard's reply starts.
    pub fn next_shard(&mut self, shard: usize) {
        self.shard = shard;
        self.op = 0;
        self.done = false;
    }

    /// One whole message of the current shard; what the client gets of it
    /// goes to `out`.
    pub fn message(&mut self, kind: BackendKind, body: &[u8], out: &mut BytesMut) {
        use crate::protocol::backend::TransactionStatus;
        let first = self.shard == 0;
        let current = self.ops.get(self.op).copied();
        match kind {
            BackendKind::DataRow if self.error.is_none() => {
                self.rows += 1;
                write::message(out, kind.tag(), body);
            }
            BackendKind::RowDescription => {
                let visible = matches!(
                    current,
                    Some(Op::Query | Op::DescribePortal { visible: true } | Op::DescribeStatement)
                );
                match &self.first_description {
                    None => {
                        self.first_description = Some(body.to_vec());
                        if visible {
                            write::message(out, kind.tag(), body);
                        }
                    }
                    Some(described) => {
                        let checked =
                            crate::fanout::assemble::check_columns(described, body, self.shard);
                        if let Err(error) = checked {
                            self.fail_with(error.message);
                        }
                    }
                }
                if current != Some(Op::Query) {
                    self.op += 1;
                }
            }
            BackendKind::CommandComplete => {
                let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                self.tags
                    .push(String::from_utf8_lossy(&body[..end]).into_owned());
                if current == Some(Op::Execute) {
                    self.op += 1;
                }
            }
            BackendKind::EmptyQueryResponse => {
                self.empty = true;
                if current == Some(Op::Execute) {
                    self.op += 1;
                }
            }
            BackendKind::ErrorResponse if self.error.is_none() => {
                self.error = Some(body.to_vec());
            }
            BackendKind::ReadyForQuery => {
                let shard = body
                    .first()
                    .and_then(|&b| TransactionStatus::from_byte(b).ok())
                    .unwrap_or(TransactionStatus::Failed);
                self.status = crate::fanout::assemble::combine_status(self.status, shard);
                self.done = true;
            }
            BackendKind::ParseComplete => {
                if first && current == Some(Op::Parse { visible: true }) {
                    write::message(out, kind.tag(), body);
                }
                self.op += 1;
            }
            BackendKind::BindComplete => {
                if first {
                    write::message(out, kind.tag(), body);
                }
                self.op += 1;
            }
            BackendKind::ParameterDescription if first => write::message(out, kind.tag(), body),
            BackendKind::NoData => {
                let visible = matches!(
                    current,
                    Some(Op::DescribePortal { visible: true } | Op::DescribeStatement)
                );
                if first && visible {
                    write::message(out, kind.tag(), body);
                }
                self.op += 1;
            }
            BackendKind::NoticeResponse | BackendKind::ParameterStatus if first => {
                write::message(out, kind.tag(), body)
            }
            _ => {}
        }
    }

    fn fail_with(&mut self, message: String) {
        if self.error.is_some() {
            return;
        }
        let mut body = BytesMut::new();
        write::error_response(&mut body, write::Severity::Error, "XX000", &message, None);
        // The message without its 5-byte header, as the server's are kept.
        self.error = Some(body[5..].to_vec());
    }

    /// After the last shard: the end of the reply. Returns the status the
    /// client is told.
    pub fn finish(&mut self, out: &mut BytesMut) -> crate::protocol::backend::TransactionStatus {
        use crate::protocol::backend::TransactionStatus;
        match &self.error {
            Some(error) => {
                write::message(out, BackendKind::ErrorResponse.tag(), error);
                if self.status == TransactionStatus::InTransaction {
                    // A shard's error fails the transaction on every shard.
                    self.status = TransactionStatus::Failed;
                }
            }
            None if !self.tags.is_empty() => write::command_complete(
                out,
                &crate::fanout::assemble::sum_tags(&self.tags, self.rows),
            ),
            None if self.empty => write::empty_query_response(out),
            None => {}
        }
        write::ready_for_query(out, self.status);
        self.status
    }
}

/// Reads `conn`'s reply message by message into `streamer`, writing what
/// the client gets to `client` as it goes (in writes of at least 64 KiB,
/// and the rest at the end).
pub async fn stream_one(
    conn: &mut ServerConn,
    streamer: &mut Streamer,
    client: &mut crate::session::client::Client,
) -> Result<(), String> {
    const FLUSH_AT: usize = 64 * 1024;
    loop {
        while let Some((kind, len)) = whole_message(&conn.buf)? {
            let message = conn.buf.split_to(len);
            streamer.message(kind, &message[5..], &mut client.out);
            if streamer.done {
                return Ok(());
            }
        }
        if client.out.len() >= FLUSH_AT {
            client
                .flush()
                .await
                .map_err(|_| "the client went away".to_owned())?;
        }
        match read_more(&mut conn.stream, &mut conn.buf).await {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("server closed the connection".to_owned()),
            Err(e) => return Err(format!("could not read from the server: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::test_bodies;
    use crate::protocol::backend::TransactionStatus;

    fn description(name: &str) -> Vec<u8> {
        test_bodies::description(&[(name, 20)], 7)
    }

    fn row(value: &str) -> Vec<u8> {
        test_bodies::row(&[Some(value)])
    }

    fn kinds(mut out: &[u8]) -> Vec<BackendKind> {
        let mut kinds = Vec::new();
        while let Ok(Some(header)) = frame::header(out, MAX_SERVER_MESSAGE_LEN) {
            kinds.push(BackendKind::from_tag(header.tag).unwrap());
            out = &out[header.total_len..];
        }
        kinds
    }

    /// Feeds a shard's reply (kind, body) to the streamer.
    fn feed(
        streamer: &mut Streamer,
        shard: usize,
        reply: &[(BackendKind, Vec<u8>)],
        out: &mut BytesMut,
    ) {
        streamer.next_shard(shard);
        for (kind, body) in reply {
            streamer.message(*kind, body, out);
        }
        assert!(streamer.done);
    }

    #[test]
    fn a_query_streams_each_shards_rows_and_sums_the_tag() {
        use BackendKind::*;
        let reply = |values: &[&str]| {
            let mut messages = vec![(RowDescription, description("id"))];
            messages.extend(values.iter().map(|v| (DataRow, row(v))));
            messages.push((
                CommandComplete,
                format!("SELECT {}\0", values.len()).into_bytes(),
            ));
            messages.push((ReadyForQuery, b"I".to_vec()));
            messages
        };
        let mut streamer = Streamer::new(vec![Op::Query]);
        let mut out = BytesMut::new();
        feed(&mut streamer, 0, &reply(&["1", "2"]), &mut out);
        assert_eq!(kinds(&out), [RowDescription, DataRow, DataRow]);
        feed(&mut streamer, 1, &reply(&["3"]), &mut out);
        assert_eq!(streamer.finish(&mut out), TransactionStatus::Idle);
        assert_eq!(
            kinds(&out),
            [
                RowDescription,
                DataRow,
                DataRow,
                DataRow,
                CommandComplete,
                ReadyForQuery
            ]
        );
        assert!(out.windows(9).any(|w| w == b"SELECT 3\0"));
    }

    #[test]
    fn a_later_shards_error_ends_the_streamed_result() {
        use BackendKind::*;
        let ops = vec![
            Op::Parse { visible: true },
            Op::Bind,
            Op::DescribePortal { visible: false },
            Op::Execute,
            Op::Sync,
        ];
        let ok = vec![
            (ParseComplete, vec![]),
            (BindComplete, vec![]),
            (RowDescription, description("id")),
            (DataRow, row("1")),
            (CommandComplete, b"SELECT 1\0".to_vec()),
            (ReadyForQuery, b"T".to_vec()),
        ];
        let failed = vec![
            (ParseComplete, vec![]),
            (
                ErrorResponse,
                b"SERROR\0C22012\0Mdivision by zero\0\0".to_vec(),
            ),
            (ReadyForQuery, b"E".to_vec()),
        ];
        let mut streamer = Streamer::new(ops);
        let mut out = BytesMut::new();
        feed(&mut streamer, 0, &ok, &mut out);
        feed(&mut streamer, 1, &failed, &mut out);
        assert_eq!(streamer.finish(&mut out), TransactionStatus::Failed);
        assert_eq!(
            kinds(&out),
            [
                ParseComplete,
                BindComplete,
                DataRow,
                ErrorResponse,
                ReadyForQuery
            ]
        );
    }

    #[test]
    fn columns_that_differ_fail_the_stream() {
        use BackendKind::*;
        let reply = |name: &str| {
            vec![
                (RowDescription, description(name)),
                (CommandComplete, b"SELECT 0\0".to_vec()),
                (ReadyForQuery, b"I".to_vec()),
            ]
        };
        let mut streamer = Streamer::new(vec![Op::Query]);
        let mut out = BytesMut::new();
        feed(&mut streamer, 0, &reply("id"), &mut out);
        feed(&mut streamer, 1, &reply("other"), &mut out);
        streamer.finish(&mut out);
        assert_eq!(kinds(&out), [RowDescription, ErrorResponse, ReadyForQuery]);
    }

    #[test]
    fn only_single_result_requests_stream() {
        assert!(streamable(&[Op::Query], true));
        assert!(!streamable(&[Op::Query], false));
        let extended = [
            Op::Bind,
            Op::DescribePortal { visible: false },
            Op::Execute,
            Op::Sync,
        ];
        assert!(streamable(&extended, true));
        let two = [Op::Bind, Op::Execute, Op::Bind, Op::Execute, Op::Sync];
        assert!(!streamable(&two, true));
        let closed = [Op::Bind, Op::Execute, Op::Close, Op::Sync];
        assert!(!streamable(&closed, true));
    }

    /// Records what a tap feeds; fails at the `fail_at`th row.
    #[derive(Default)]
    struct Recorder {
        descriptions: Vec<(usize, Vec<u8>)>,
        rows: Vec<(usize, Vec<u8>)>,
        fail_at: Option<usize>,
    }

    impl Rows for Recorder {
        fn description(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
            self.descriptions.push((shard, body.to_vec()));
            Ok(())
        }
        fn client_description(&self, _out: &mut BytesMut) {}
        fn row(&mut self, shard: usize, body: &[u8]) -> Result<(), RowsError> {
            if self.fail_at == Some(self.rows.len()) {
                return Err(RowsError {
                    sqlstate: "54000",
                    message: "too much".to_owned(),
                });
            }
            self.rows.push((shard, body.to_vec()));
            Ok(())
        }
        fn finish(&mut self, _out: &mut BytesMut) -> Result<u64, RowsError> {
            Ok(self.rows.len() as u64)
        }
    }

    /// A Parse/Describe(S)/Bind/Describe(P)/Execute/Sync reply through a
    /// tap: which messages it keeps for assembling.
    fn tapped(recorder: &mut Recorder) -> (Vec<BackendKind>, Option<RowsError>) {
        let reply = [
            (BackendKind::ParseComplete, vec![]),
            (BackendKind::ParameterDescription, vec![0, 0]),
            (BackendKind::RowDescription, description("statement")),
            (BackendKind::BindComplete, vec![]),
            (BackendKind::RowDescription, description("portal")),
            (BackendKind::DataRow, row("1")),
            (BackendKind::NoticeResponse, vec![0]),
            (BackendKind::DataRow, row("2")),
            (BackendKind::CommandComplete, b"SELECT 2\0".to_vec()),
            (BackendKind::DataRow, row("later")),
            (BackendKind::ReadyForQuery, vec![b'I']),
        ];
        let tap = Tap::new(Some(recorder), &[], Duration::from_secs(1));
        let mut tapping = Tapping::default();
        let kept = reply
            .iter()
            .filter(|(kind, body)| tapping.message(&tap, 3, *kind, body))
            .map(|(kind, _)| *kind)
            .collect();
        (kept, tap.into_error())
    }

    #[test]
    fn a_tap_feeds_the_result_and_keeps_the_rest() {
        let mut recorder = Recorder::default();
        let (kept, error) = tapped(&mut recorder);
        assert_eq!(error, None);
        assert_eq!(
            kept,
            [
                BackendKind::ParseComplete,
                BackendKind::ParameterDescription,
                BackendKind::RowDescription,
                BackendKind::BindComplete,
                BackendKind::RowDescription,
                BackendKind::NoticeResponse,
                BackendKind::CommandComplete,
                BackendKind::DataRow,
                BackendKind::ReadyForQuery,
            ]
        );
        // The statement's description is not the result's.
        assert_eq!(recorder.descriptions, [(3, description("portal"))]);
        assert_eq!(recorder.rows, [(3, row("1")), (3, row("2"))]);
    }

    #[test]
    fn a_tap_stops_feeding_at_the_first_error() {
        let mut recorder = Recorder {
            fail_at: Some(1),
            ..Recorder::default()
        };
        let (kept, error) = tapped(&mut recorder);
        assert_eq!(error.map(|e| e.sqlstate), Some("54000"));
        assert_eq!(recorder.rows, [(3, row("1"))]);
        // After an error no row is kept, not even one outside the result.
        assert!(!kept.contains(&BackendKind::DataRow), "{kept:?}");
        assert!(kept.contains(&BackendKind::ReadyForQuery));
    }

    #[test]
    fn without_a_merge_the_kept_reply_is_capped() {
        let tap = Tap::<Recorder>::new(None, &[], Duration::from_secs(1)).with_limit(64);
        let mut tapping = Tapping::default();
        let mut kept = Vec::new();
        tapping.message(&tap, 0, BackendKind::RowDescription, &description("v"));
        for n in 0..10 {
            let body = row(&format!("{n:08}"));
            if tapping.message(&tap, 0, BackendKind::DataRow, &body) {
                kept.push(n);
            }
        }
        assert!(tapping.message(&tap, 0, BackendKind::ReadyForQuery, b"I"));
        // 27 bytes of description, 19 per row: the second row passes 64.
        assert_eq!(kept, [0, 1]);
        let error = tap.into_error().expect("over the cap");
        assert_eq!(error.sqlstate, "54000");
        assert!(
            error.message.contains("separate requests"),
            "{}",
            error.message
        );
    }
}
