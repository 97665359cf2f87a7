//! The I/O of a cross-shard request: the same request (rewritten per
//! `fanout::plan`) goes to one server connection per shard, all driven at
//! once on the client's core, and each reply is read whole, up to its last
//! ReadyForQuery. `fanout::assemble` then makes the client's reply of them.
//! Must not: decide routing or merge rows.

use bytes::BytesMut;

use crate::fanout::assemble::Op;
use crate::pool::server_conn::read_more;
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

/// Writes `request` to `conn` and reads until `ready` ReadyForQuery messages
/// have arrived; returns those bytes (the connection's buffer is left with
/// whatever followed).
async fn exchange_one(
    conn: &mut ServerConn,
    request: &[u8],
    ready: u32,
) -> Result<BytesMut, String> {
    conn.stream
        .write_all(request)
        .await
        .map_err(|e| format!("could not write to the server: {e}"))?;
    let mut scanned = 0;
    let mut seen = 0;
    loop {
        while let Some(header) = frame::header(&conn.buf[scanned..], MAX_SERVER_MESSAGE_LEN)
            .map_err(|e| format!("the server sent an invalid message: {e}"))?
        {
            if scanned + header.total_len > conn.buf.len() {
                break;
            }
            match BackendKind::from_tag(header.tag) {
                Ok(BackendKind::ReadyForQuery) => seen += 1,
                Ok(BackendKind::CopyInResponse | BackendKind::CopyOutResponse) => {
                    return Err("COPY is not supported across shards yet".to_owned());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the server sent an invalid message: {e}")),
            }
            scanned += header.total_len;
            if seen == ready {
                return Ok(conn.buf.split_to(scanned));
            }
        }
        match read_more(&mut conn.stream, &mut conn.buf).await {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("server closed the connection".to_owned()),
            Err(e) => return Err(format!("could not read from the server: {e}")),
        }
    }
}

/// Sends `requests[n]` to `conns[n]`, all at once, and reads each reply.
pub async fn exchange(
    conns: Vec<&mut ServerConn>,
    requests: &[BytesMut],
    ready: u32,
) -> Result<Vec<BytesMut>, ExchangeError> {
    let futures: Vec<_> = conns
        .into_iter()
        .zip(requests)
        .map(|(conn, request)| exchange_one(conn, request, ready))
        .collect();
    let mut replies = Vec::with_capacity(requests.len());
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
    /// One request for every shard (they only differ in nothing today; kept
    /// per shard for rewrites that will, e.g. multi-row INSERT split).
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
pub fn build(messages: &[&[u8]], source: &impl StatementSource) -> Result<Fanned, String> {
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
